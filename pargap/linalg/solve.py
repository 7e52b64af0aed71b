"""The sparse GP solve as a least-squares problem, by QR, never by the normal equations.

    A = [ Lambda^(-1/2) K_NM ]    b = [ Lambda^(-1/2) y ]    K_MM + jitter I = U^T U
        [        U           ]        [       0         ]

    alpha = argmin ||A alpha - b||:   A = Q R,  R alpha = Q^T b

The solvers are the streamed factors of :mod:`pargap.linalg.factor` (tsqr, serial, scalapack):
rows are folded in block by block, the prior rows at the solve. This module holds the one-call
forms of them for a block of rows already in memory (``serial_solve``, ``tsqr_solve_block``,
``scalapack_solve``), the rule that picks a solver by memory (``choose_solver``) and the tiles of
K_MM (``covariance_sparse_tile``).
"""

import numpy as np
import scipy.linalg

from pargap.errors import PargapError
from pargap.linalg import tsqr
from pargap.linalg.factor import RowFactor, factor_bytes
from pargap.memory_limit import available_memory, limit_per_rank, parse_bytes  # noqa: F401 (re-exported)

__all__ = ["r_factor", "reduce_triangles", "serial_solve", "serial_solve_block", "tsqr_solve", "tsqr_solve_block",
           "scalapack_solve", "solve_on_root", "choose_solver", "covariance_sparse_tile"]


def _qr_in_place(block):
    """LAPACK dgeqrf of a block [A | b] (n, M+1), n > 0: R in the upper triangle of its first
    min(n, M+1) rows, reflectors below. A Fortran-ordered float64 block is factorised in place
    (and destroyed) without a copy; others are copied once."""
    a = np.asfortranarray(block, dtype=float)
    lwork, info = scipy.linalg.lapack.dgeqrf_lwork(*a.shape)  # blocked Householder workspace
    qr, _, _, info = scipy.linalg.lapack.dgeqrf(a, lwork=max(int(lwork), 1), overwrite_a=True)
    if info != 0:
        raise PargapError(f"QR factorisation failed (LAPACK dgeqrf info={info})")
    return qr


def r_factor(block):
    """R factor (k, M+1) of a block [A | b], k = min(rows, M+1) (see :func:`_qr_in_place`: a
    Fortran-ordered block is destroyed)."""
    if block.shape[0] == 0:
        return np.zeros((0, block.shape[1]))
    return np.triu(_qr_in_place(block)[: min(block.shape)])


def serial_solve(A_nm, b, U):
    """Reference solve on one process. A_nm: (N, M) = Lambda^(-1/2) K_NM; b: (N,); U: (M, M)."""
    return serial_solve_block(np.column_stack([A_nm, b]), U)


def serial_solve_block(block, U):
    """Serial solve of block = [Lambda^(-1/2) K_NM | Lambda^(-1/2) y] (N, M+1) (destroyed if
    Fortran-ordered), with the prior rows [U | 0]."""
    from pargap.parallel import SerialComm

    factor = RowFactor.create(SerialComm(), block.shape[1], "tsqr")
    factor.fold(block)
    return factor.solve(U)


def solve_on_root(comm, solve):
    """on_root for a solve: the Solution is broadcast without its (M, M) factor, kept on rank 0."""
    from pargap.parallel import on_root

    kept = {}

    def root():
        solution = solve()
        kept["factor"], solution.factor = solution.factor, None
        return solution

    solution = on_root(comm, root)
    solution.factor = kept.get("factor")
    return solution


def reduce_triangles(comm, R):
    """The TSQR tree (:func:`pargap.linalg.tsqr.reduce_to_root`): each rank's triangle R_p (k_p,
    M+1), k_p <= M+1, of its rows -> the (M+1, M+1) triangle of all the ranks' rows on rank 0
    (None on the others). Collective."""
    width = R.shape[1]
    square = tsqr.empty_triangle(width)
    square[:len(R)] = R
    square, _ = tsqr.reduce_to_root(comm, square, has_rows=len(R) > 0)
    return square if comm.Get_rank() == 0 else None


def tsqr_solve(comm, A_local, b_local, U):
    """Tall-skinny QR over ranks: A_local (n_p, M) and b_local (n_p,) are this rank's rows; U (M, M)
    is needed on rank 0 only."""
    return tsqr_solve_block(comm, np.column_stack([A_local, b_local]), U)


def tsqr_solve_block(comm, block, U):
    """Tall-skinny QR over ranks of block = [A_p | b_p] (n_p, M+1) on each rank (destroyed when
    Fortran-ordered); U (M, M) is used on rank 0 only. Every rank returns the same Solution."""
    factor = RowFactor.create(comm, block.shape[1], "tsqr")
    factor.fold(block)
    return factor.solve(U)


TSQR_TRIANGLES = 3
"""(M+1) x (M+1) float64 arrays the tall-skinny QR holds at its peak on rank 0, beyond the rows
block: R, the copy the prior is folded into, the prior rows [U | 0] (see
:func:`pargap.linalg.factor.factor_bytes`, which adds the workspace)."""

MEMORY_FRACTION = 0.5
"""``auto`` picks TSQR when its triangles take at most this fraction of the memory per rank."""


def memory_per_rank(comm):
    """Bytes of memory per rank, the smallest over the ranks, by
    :func:`pargap.memory_limit.limit_per_rank` (PARGAP_MEMORY_PER_RANK, else the tightest of the
    Slurm, cgroup and MemAvailable limits shared by the ranks on each node). Collective."""
    return min(comm.allgather(limit_per_rank(ranks_on_node(comm))[0]))


def ranks_on_node(comm):
    """Ranks of ``comm`` on this node (sharing its memory)."""
    if comm.Get_size() == 1:
        return 1
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


def choose_solver(comm, M, requested="auto"):
    """(solver, reason): ``requested`` unless it is "auto"; then :func:`auto_solver` for the memory
    per rank."""
    if requested != "auto":
        return requested, "as set (solver)"
    return auto_solver(M, memory_per_rank(comm))


def auto_solver(M, have):
    """The "auto" rule -> (solver, reason): "tsqr" when its factor
    (:func:`pargap.linalg.factor.factor_bytes`, about TSQR_TRIANGLES (M+1)^2 float64 triangles)
    takes at most MEMORY_FRACTION of ``have`` bytes per rank, "scalapack" otherwise."""
    need = factor_bytes("tsqr", M + 1, 1)
    verdict = f"TSQR needs {_size(need)} beyond the row blocks on rank 0, {_size(have)} available per rank"
    if need <= MEMORY_FRACTION * have:
        return "tsqr", verdict
    return "scalapack", verdict + f" (more than {MEMORY_FRACTION:.0%})"


def _size(n_bytes):
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes:.0f} bytes"


def covariance_sparse_tile(models, jitter, rows, cols):
    """Tile K[rows][:, cols] of the block-diagonal K_MM + jitter I of several models (their
    sparse points concatenated in order), rows and cols 0-based global indices. Equals
    ``Model.covariance_sparse`` restricted to the tile: w_i k(s_i, s_j) w_j, + jitter on i = j."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    K = np.zeros((len(rows), len(cols)))
    start = 0
    for m in models:
        stop = start + m.n_sparse
        r = np.flatnonzero((rows >= start) & (rows < stop))
        c = np.flatnonzero((cols >= start) & (cols < stop))
        if len(r) and len(c):
            i, j = rows[r] - start, cols[c] - start
            w = m.sparse_weight
            K[np.ix_(r, c)] = w[i, None] * m.kernel(m.sparse_x[i], m.sparse_x[j]) * w[None, j]
        start = stop
    K[rows[:, None] == cols[None, :]] += jitter
    return K


def scalapack_solve(comm, block, K_mm_tile, block_size=64):
    """2-D block-cyclic QR by ScaLAPACK (:mod:`pargap.linalg.scalapack_factor`) of block = [A_p |
    b_p] (n_p, M+1) on each rank, with ``K_mm_tile(rows, cols)``, the tile of K_MM + jitter I at
    those 0-based global indices; every rank returns the same Solution. Under a SerialComm, MPI's
    COMM_SELF is used."""
    with RowFactor.create(comm, block.shape[1], "scalapack", block_size=block_size) as factor:
        factor.fold(block)
        return factor.solve(K_mm_tile)
