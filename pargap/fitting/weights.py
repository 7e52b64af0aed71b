"""Phase solve: the coefficients alpha of every model from the ranks' rows blocks, by the solver
of :mod:`pargap.linalg.solve` (K_MM = U^T U, the GP prior, enters as the extra rows [U | 0])."""

import numpy as np
import scipy.linalg

from pargap.gp.model import cholesky_factor
from pargap.linalg.solve import (covariance_sparse_tile, scalapack_solve, serial_solve_block, solve_on_root,
                                 tsqr_solve_block)
from pargap.parallel import collective


def solve_weights(comm, block, models, jitter, solver):
    """Solve for alpha with ``solver`` ("serial", "tsqr" or "scalapack"), this rank's rows
    ``block`` (n_p, M+1) destroyed; sets each model's alpha (M_k,) and returns the Solution
    (the same alpha on every rank, the (M, M) factor on rank 0 only, none from ScaLAPACK)."""
    if solver == "scalapack":  # K_MM built and factorised distributed: no rank holds M x M
        def tile(rows, cols):
            return covariance_sparse_tile(models, jitter, rows, cols)

        solution = collective(comm, scalapack_solve, comm, block, tile)
    else:
        def prior_factor():  # K_MM = U^T U, needed on rank 0 only
            return cholesky_factor(scipy.linalg.block_diag(*[m.covariance_sparse(jitter) for m in models]))

        U = collective(comm, lambda: prior_factor() if comm.Get_rank() == 0 else None)
        if solver == "serial":
            blocks = comm.gather(block, root=0)
            solution = solve_on_root(comm, lambda: serial_solve_block(np.vstack(blocks), U))
        else:
            solution = tsqr_solve_block(comm, block, U)
    start = 0
    for m in models:
        m.alpha = solution.alpha[start:start + m.n_sparse]
        start += m.n_sparse
    return solution
