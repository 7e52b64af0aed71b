"""The streamed QR factor of the least-squares rows: fold bounded blocks of rows in, solve once.

    factor = RowFactor.create(comm, M + 1, solver)
    factor.fold(rows)                 # rows = [Lambda^-1/2 K_NM | Lambda^-1/2 y] of a block, (k, M+1)
    ...                               # every rank calls fold the same number of times (k may be 0)
    solution = factor.solve(prior)    # prior: the rows [U | 0], K_MM + jitter I = U^T U

The factor holds the R factor of all rows folded so far, never the rows: memory per rank is
O(M^2) for "tsqr" and "serial" (one (M+1) x (M+1) triangle per rank; a received one and the
prior's while merging and solving on rank 0), O(M^2 / P) for "scalapack"
(:mod:`pargap.linalg.scalapack_factor`), plus the block being folded; none of it grows with the
number of rows N. The coefficients equal those of one QR of all rows, to rounding, whatever the
block sizes and the number of ranks P.

- tsqr: each rank folds its own blocks into its own triangle (:func:`pargap.linalg.tsqr.fold`, no
  communication); ``solve`` merges the triangles up a tree to rank 0.
- serial: every block is sent to rank 0, which folds them all (the one-process reference).
- scalapack: 2-D block-cyclic, see :mod:`pargap.linalg.scalapack_factor`.

``prior`` is ``K_mm_tile(rows, cols)`` -> the (len(rows), len(cols)) tile of K_MM + jitter I at
those 0-based global indices (rank 0 builds its M x M in column panels; ScaLAPACK ranks build
only their tiles), or, for tsqr and serial, the upper Cholesky factor U itself (needed on rank 0
only).

Checkpoints: :meth:`RowFactor.checkpoint_state` gives each rank a slab of rows of ONE global
(M+1) x (M+1) upper triangle, whose R factor is that of all rows folded so far on all ranks.
Being rows, a saved triangle is folded back in like any other rows, on any number of ranks
(:meth:`RowFactor.restore`).
"""

import numpy as np
import scipy.linalg.lapack

from pargap.errors import PargapError
from pargap.linalg import tsqr
from pargap.linalg.factor_base import FactorBase, FactorState, share
from pargap.linalg.solution import not_positive_definite, solve_triangle, warn_condition

SOLVERS = ("tsqr", "scalapack", "serial")

PRIOR_PANEL = 512
"""Columns of K_MM built at a time on rank 0 (tsqr, serial)."""


class RowFactor(FactorBase):
    """The R factor of the rows folded so far (see the module docstring). Not instantiated
    directly: :meth:`create` or :meth:`restore`."""

    @staticmethod
    def create(comm, n_columns, solver="tsqr", **options):
        """A factor of no rows, [A | b] with n_columns = M + 1 columns. Collective for scalapack.
        options: block_size (ScaLAPACK's square blocks, default 64)."""
        if solver == "tsqr":
            return TSQRFactor(comm, n_columns)
        if solver == "serial":
            return SerialFactor(comm, n_columns)
        if solver == "scalapack":
            from pargap.linalg.scalapack_factor import ScalapackFactor

            return ScalapackFactor(comm, n_columns, **options)
        raise PargapError(f"unknown solver '{solver}': {', '.join(SOLVERS)}")

    @staticmethod
    def restore(comm, n_columns, solver, saved, **options):
        """A factor holding a checkpointed triangle, on any number of ranks. ``saved``: the
        triangle as written from :meth:`checkpoint_state`, anything with ``shape`` (n_rows,
        n_columns) and row slices (an h5py Dataset open on every rank); each rank reads and folds
        a contiguous share. Collective."""
        factor = RowFactor.create(comm, n_columns, solver, **options)
        start, stop = share(int(saved.shape[0]), comm.Get_rank(), comm.Get_size())
        rows = np.asfortranarray(saved[start:stop], dtype=float) if stop > start else np.zeros((0, n_columns))
        factor.fold(rows)
        return factor

    def fold(self, rows):
        raise NotImplementedError

    def checkpoint_state(self):
        raise NotImplementedError

    def solve(self, prior):
        raise NotImplementedError

    def bytes_per_rank(self):
        return factor_bytes(self.solver, self.n_columns, self.comm.Get_size())


class TSQRFactor(RowFactor):
    """One triangle per rank; merged up a tree of ranks at a checkpoint and at the solve."""

    solver = "tsqr"

    def __init__(self, comm, n_columns):
        self.comm, self.n_columns = comm, int(n_columns)
        self.R = tsqr.empty_triangle(self.n_columns)
        self.has_rows = False

    def fold(self, rows):
        """R <- R factor of [R ; rows] on this rank (rows (k, n_columns), k >= 0, overwritten when
        Fortran-ordered float64). No communication."""
        if rows.ndim != 2 or rows.shape[1] != self.n_columns:
            raise ValueError(f"rows of {self.n_columns} columns expected, got shape {rows.shape}")
        if rows.shape[0]:
            tsqr.fold(self.R, rows)
            self.has_rows = True

    def _merge_to_root(self):
        self.R, self.has_rows = tsqr.reduce_to_root(self.comm, self.R, self.has_rows)

    def checkpoint_state(self):
        """The ranks' triangles merged on rank 0 (which keeps folding into it; the others start
        again from none): rank 0 holds all n_columns rows, the others none. Collective."""
        self._merge_to_root()
        n = self.n_columns
        if self.comm.Get_rank() == 0:
            return FactorState(0, self.R, n)
        return FactorState(n, np.zeros((0, n)), n)

    def solve(self, prior, keep_factor=True):
        """Merge to rank 0, fold the prior rows [U | 0] into a copy of R there, back-substitute;
        every rank returns the same Solution (``factor`` (M, M) on rank 0 only, when keep_factor).
        The factor keeps the data's R: more folds, a checkpoint or another solve may follow.
        Rank 0 holds three triangles meanwhile: R, its copy and the prior rows. Collective."""
        from pargap.parallel import on_root

        self._merge_to_root()
        kept = {}

        def root():
            R = np.copy(self.R, order="F")
            fold_prior(R, prior)
            solution = solve_triangle(R, keep_factor)
            kept["factor"], solution.factor = solution.factor, None
            return solution

        solution = on_root(self.comm, root)
        solution.factor = kept.get("factor")
        if self.comm.Get_rank() == 0:
            warn_condition(solution)
        return solution


class SerialFactor(TSQRFactor):
    """Every block gathered to rank 0 and folded there: the one-process reference, for any P."""

    solver = "serial"

    def fold(self, rows):
        """Collective: rank 0 folds its rows, then each other rank's in turn (one block at a time)."""
        comm = self.comm
        if comm.Get_rank() == 0:
            super().fold(rows)
            for source in range(1, comm.Get_size()):
                shape = comm.recv(source=source, tag=0x5e1)
                if shape[0]:
                    other = np.empty(shape, order="F")
                    comm.Recv(other, source=source, tag=0x5e2)
                    super().fold(other)
        else:
            comm.send(rows.shape, dest=0, tag=0x5e1)
            if rows.shape[0]:
                comm.Send(np.asfortranarray(rows, dtype=float), dest=0, tag=0x5e2)


def fold_prior(R, prior):
    """R <- R factor of [R ; U | 0] on one process (R: (M+1, M+1) Fortran). prior: the tile
    function of K_MM + jitter I (built in column panels into the buffer that becomes U, factorised
    there in place) or U itself (M, M) upper."""
    M = R.shape[0] - 1
    T = np.zeros((M, M + 1), order="F")  # [U | 0]: its first M columns are a Fortran M x M array
    if callable(prior):
        everything = np.arange(M)
        for j in range(0, M, PRIOR_PANEL):
            cols = everything[j:j + PRIOR_PANEL]
            T[:, cols] = prior(everything, cols)
        U, info = scipy.linalg.lapack.dpotrf(T[:, :M], lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise not_positive_definite()
        if not np.shares_memory(U, T):
            T[:, :M] = U
    else:
        T[:, :M] = np.triu(prior)
    tsqr.fold_trapezoid(R, T)
    return R


def factor_bytes(solver, n_columns, size, block_size=64):
    """Bytes the factor holds on its busiest rank beyond the block being folded: tsqr and serial,
    rank 0 at the solve: its triangle, the copy the prior is folded into, the prior rows [U | 0],
    a panel of K_MM and tpqrt's workspace (the tree needs a received triangle and a 32 MiB chunk); scalapack, see
    :func:`pargap.linalg.scalapack_factor.scalapack_bytes`."""
    n = int(n_columns)
    if solver == "scalapack":
        from pargap.linalg.scalapack_factor import scalapack_bytes

        return scalapack_bytes(n, size, block_size)
    chunk = min(tsqr.CHUNK, n * (n + 1) // 2)
    # R (upper part resident), its dense copy and the prior rows [U | 0]
    return tsqr.triangle_resident_bytes(n) + 8.0 * (2 * n * n + max((tsqr.PANEL + PRIOR_PANEL) * n, chunk))
