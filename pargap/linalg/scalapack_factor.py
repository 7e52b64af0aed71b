"""The streamed QR factor on a 2-D block-cyclic process grid (ScaLAPACK), for M too large for one rank.

The (M+1) x (M+1) triangle R lives distributed, nb x nb blocks on a near-square grid, in the top
rows of a matrix G; no rank ever holds more than its share of it. A fold of one block of rows per
rank (k_p rows on rank p): a block taller than wide (k_p > M+1) is first reduced on its rank to
its (M+1) x (M+1) triangle (LAPACK tpqrt, no communication, no more memory than the block); then,
with h = max over ranks of the rows left,

    G = [ R           ]   (M+1) rows        pdgemr2d: each rank's rows, zero-padded to h, into
        [ rows rank 0 ]   h rows            the block-cyclic rows below R
        [ ...         ]
        [ rows rank P-1]  h rows            pdgeqrf:  R <- R factor of G (top M+1 rows)

and the reflectors are cleared from R's lower part. Zero rows change no R, so the padding only
costs flops. pdgeqrf treats R as dense (ScaLAPACK has no pdtpqrt): 2 (M + 1 + P h) (M+1)^2 flops
in all, against the 2 P h (M+1)^2 of the rows alone.

The solve stacks the prior rows [U | 0] on R (K_MM + jitter I built tile by tile where it lives
and factorised there, pdpotrf), one more pdgeqrf, pdtrtrs. Memory per rank: R's share (M+1)^2 / P,
G's rows share ~h (M+1) (one block), and at the solve the stacked (2M+1) x (M+1) matrix's share.
"""

import numpy as np

from pargap.errors import PargapError
from pargap.linalg import scalapack as sl
from pargap.linalg import tsqr
from pargap.linalg.factor_base import FactorBase, FactorState
from pargap.linalg.solution import (Solution, largest_eigenvalue, not_finite, not_positive_definite,
                                    rank_deficient, warn_condition)


def scalapack_bytes(n_columns, size, block_size=64):
    """Bytes per rank beyond the blocks (the rows and their share of G): R's share and, at the solve,
    the stacked prior and R, (3 (M+1)^2 / P), and pdgeqrf's panel workspace."""
    n = int(n_columns)
    return 8 * (3 * n * n / size + 4 * block_size * n)


class ScalapackFactor(FactorBase):
    """R distributed block-cyclic on a near-square grid of ``comm``'s ranks (COMM_SELF for a
    SerialComm). Holds BLACS grids: :meth:`solve` or :meth:`close` frees them (collective)."""

    solver = "scalapack"

    def __init__(self, comm, n_columns, block_size=64):
        from mpi4py import MPI

        if not isinstance(comm, MPI.Comm):  # one process: BLACS still needs an MPI communicator
            comm = MPI.COMM_SELF
        self.comm, self.n_columns, self.block_size = comm, int(n_columns), int(block_size)
        self.grid = sl.Grid(comm, *sl.grid_shape(comm.Get_size()))
        self.column = sl.Grid(comm, comm.Get_size(), 1)
        self.height = 0  # h: rows per rank G has room for below R
        self.G = self._matrix(self.n_columns)

    def _matrix(self, m):
        return sl.Distributed(self.grid, m, self.n_columns, self.block_size, self.block_size)

    def _top(self, G):
        """(local rows of R in G, their global indices): the first local rows, in every G."""
        k_r = int(np.count_nonzero(G.rows < self.n_columns))
        return G.local[:k_r], G.rows[:k_r]

    def fold(self, rows):
        """R <- R factor of [R ; the rows of every rank]. Collective; rows (k, M+1), k >= 0
        (overwritten when Fortran-ordered float64)."""
        from mpi4py import MPI

        n, size = self.n_columns, self.comm.Get_size()
        if rows.ndim != 2 or rows.shape[1] != n:
            raise ValueError(f"rows of {n} columns expected, got shape {rows.shape}")
        if rows.shape[0] > n:  # taller than wide: reduced here first (tpqrt, no communication)
            rows = tsqr.fold(tsqr.empty_triangle(n), rows)
        h = self.comm.allreduce(rows.shape[0], op=MPI.MAX)
        if h == 0:
            return
        if h > self.height:  # room for taller blocks: a new G, R's local rows copied as they are
            G = self._matrix(n + size * h)
            top, _ = self._top(self.G)
            G.local[:len(top)] = top
            self.G, self.height = G, h
        if rows.shape[0] == h and rows.dtype == np.float64 and rows.flags.f_contiguous:
            padded = rows
        else:
            padded = np.zeros((h, n), order="F")
            padded[:rows.shape[0]] = rows
        source = sl.Distributed(self.column, size * h, n, h, n, local=padded)
        sl.copy(size * h, n, source, 1, 1, self.G, n + 1, 1, self.grid.context)
        del source, padded
        sl.geqrf(n + size * h, n, self.G)
        _clear_below_diagonal(*self._top(self.G), self.G.cols)

    def checkpoint_state(self):
        """Each rank's slab of R, rows [p s, (p+1) s) with s = ceil((M+1) / P) (pdgemr2d). Collective."""
        n, size = self.n_columns, self.comm.Get_size()
        slab = -(-n // size)
        out = sl.Distributed(self.column, n, n, slab, n)
        sl.copy(n, n, self.G, 1, 1, out, 1, 1, self.grid.context)
        return FactorState(min(self.comm.Get_rank() * slab, n), out.local, n)

    def solve(self, prior, keep_factor=False):
        """alpha from R and the prior rows [U | 0]; ``prior(rows, cols)`` is the tile of K_MM +
        jitter I at those global indices, called once per rank for its share. Every rank returns
        the same Solution (no factor: R stays distributed). The factor keeps the data's R (more
        folds, a checkpoint or another solve may follow). Collective."""
        from mpi4py import MPI

        if not callable(prior):
            raise PargapError("the ScaLAPACK solver needs K_MM as a tile function, not U")
        comm, n, nb = self.comm, self.n_columns, self.block_size
        M = n - 1
        S = self._matrix(M + n)  # [U | 0 ; R]
        k_r, k_c = np.count_nonzero(S.rows < M), np.count_nonzero(S.cols < M)
        prior_rows, rows, cols = S.local[:k_r], S.rows[:k_r], S.cols[:k_c]
        prior_rows[:, :k_c] = prior(rows, cols)
        if sl.potrf(M, S) != 0:
            raise not_positive_definite()
        _clear_below_diagonal(prior_rows, rows, S.cols)
        sl.copy(n, n, self.G, 1, 1, S, M + 1, 1, self.grid.context)
        sl.geqrf(M + n, n, S)
        top, top_rows = self._top(S)
        diagonal = _local_diagonal(top, top_rows, cols)
        smallest = comm.allreduce(float(np.min(np.abs(diagonal), initial=np.inf)), op=MPI.MIN)
        if not np.isfinite(smallest):
            raise not_finite()
        if not smallest > 0:
            raise rank_deficient()
        d = _column_norms(comm, top, top_rows, cols, M)
        condition = _distributed_condition(comm, S, M, nb, d)
        if sl.trtrs(M, 1, S, 1, 1, S, 1, M + 1) != 0:
            raise rank_deficient()
        alpha, residual = np.zeros(M), np.zeros(1)
        if k_c < len(S.cols):  # this rank holds part of the last column [alpha ; residual ; ...]
            alpha[rows] = S.local[:k_r, k_c]
            if k_r < len(S.rows) and S.rows[k_r] == M:
                residual[0] = abs(S.local[k_r, k_c])
        del S, top, prior_rows
        comm.Allreduce(MPI.IN_PLACE, alpha)
        comm.Allreduce(MPI.IN_PLACE, residual)
        if not np.all(np.isfinite(alpha)):
            raise PargapError("the solve produced non-finite coefficients: raise sparse_jitter or use fewer "
                              "sparse points")
        solution = Solution(alpha, condition, float(residual[0]))
        if comm.Get_rank() == 0:
            warn_condition(solution)
        return solution

    def bytes_per_rank(self):
        return scalapack_bytes(self.n_columns, self.comm.Get_size(), self.block_size)

    def close(self):
        """Free the distributed R and the BLACS grids (collective; the factor is then unusable)."""
        self.G = None
        for grid in (self.grid, self.column):
            grid.close()


def _clear_below_diagonal(local, rows, cols):
    """Zero the entries of a distributed matrix's local part below the global diagonal."""
    for j, c in enumerate(cols):
        local[np.searchsorted(rows, c, side="right"):, j] = 0.0


def _local_diagonal(local, rows, cols):
    """This rank's entries of the global diagonal of a distributed matrix (rows, cols: the global
    indices of ``local``'s rows and columns, ascending)."""
    if not len(rows):
        return np.zeros(0)
    i = np.minimum(np.searchsorted(rows, cols), len(rows) - 1)
    held = rows[i] == cols
    return local[i[held], np.flatnonzero(held)]


def _column_norms(comm, top, rows, cols, M):
    """Norms of the columns of the distributed upper M x M triangle (top: this rank's part of its
    rows, rows and cols the global indices of top's rows and columns), the same M-vector on every rank."""
    from mpi4py import MPI

    squares = np.zeros(M)
    for j, c in enumerate(cols[cols < M]):
        upper = top[:np.searchsorted(rows, c, side="right"), j]
        squares[c] = upper @ upper
    comm.Allreduce(MPI.IN_PLACE, squares)
    return np.sqrt(squares)


def _distributed_condition(comm, G, M, block_size, d):
    """2-norm condition estimate of R D^-1 (R the distributed upper M x M triangle of G, D = diag(d)
    its column norms), the same on every rank: the square root of the largest eigenvalues of
    D^-1 R^T R D^-1 and D R^-1 R^-T D (Lanczos, :func:`largest_eigenvalue`). Each step is two
    distributed triangular products or solves (pdtrmv, pdtrsv) of an M-vector, O(M^2 / P) flops.
    (ScaLAPACK's own pdtrcon was found to underestimate the 1-norm condition number by 2x to 30x
    on random triangles here, even on one rank.)"""
    from mpi4py import MPI

    vector = sl.Distributed(G.grid, M, 1, block_size, block_size)
    mine = vector.local.shape[1] > 0

    def apply(x, op, first, second):
        if mine:
            vector.local[:, 0] = x[vector.rows]
        op(first, M, G, vector)
        op(second, M, G, vector)
        out = np.zeros(M)
        if mine:
            out[vector.rows] = vector.local[:, 0]
        comm.Allreduce(MPI.IN_PLACE, out)
        return out

    gram = largest_eigenvalue(lambda x: apply(x / d, sl.trmv, "N", "T") / d, M, comm)
    inverse = largest_eigenvalue(lambda x: apply(x * d, sl.trsv, "T", "N") * d, M, comm)
    return float(np.sqrt(gram * inverse))
