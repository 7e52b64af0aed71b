"""STAND-IN for part A's streamed factor (linalg/factor.py): same interface, dgeqrf-based.

Replaced by ``git merge streamlinalg`` once /work/wt/FACTOR_API.md says it works.
"""

from dataclasses import dataclass

import numpy as np

from pargap.linalg.solve import (_r_of, cholesky_factor, scalapack_solve, serial_solve_block, solve_on_root,
                                 tsqr_solve_block)


@dataclass
class FactorState:
    offset: int
    rows: np.ndarray
    n_rows: int


class RowFactor:
    def __init__(self, comm, n_columns, solver):
        self.comm, self.n_columns, self.solver = comm, n_columns, solver
        self.R = np.zeros((0, n_columns))

    @classmethod
    def create(cls, comm, n_columns, solver):
        return cls(comm, n_columns, solver)

    def fold(self, rows):
        if len(rows):
            self.R = _r_of(np.vstack([self.R, rows]))

    def _merged(self):
        parts = self.comm.gather(self.R, root=0)
        if self.comm.Get_rank() == 0:
            return _r_of(np.vstack(parts))
        return np.zeros((0, self.n_columns))

    def checkpoint_state(self):
        R = self._merged()
        self.R = R
        n = self.comm.bcast(len(R), root=0)
        return FactorState(0, R.copy(), n)

    @classmethod
    def restore(cls, comm, n_columns, solver, saved):
        factor = cls(comm, n_columns, solver)
        n = saved.shape[0]
        rank, size = comm.Get_rank(), comm.Get_size()
        factor.fold(np.asarray(saved[rank * n // size:(rank + 1) * n // size]))
        return factor

    def solve(self, prior):
        M = self.n_columns - 1
        R = self.R
        if self.solver == "scalapack":
            return scalapack_solve(self.comm, np.asfortranarray(R.copy()), prior)
        U = cholesky_factor(prior(np.arange(M), np.arange(M))) if self.comm.Get_rank() == 0 else None
        if self.solver == "serial":
            blocks = self.comm.gather(R, root=0)
            return solve_on_root(self.comm, lambda: serial_solve_block(np.vstack(blocks), U))
        return tsqr_solve_block(self.comm, np.asfortranarray(R.copy()), U)

    def bytes_per_rank(self):
        return 3.0 * 8 * self.n_columns**2
