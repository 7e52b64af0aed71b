"""Tall-skinny QR by triangles: fold rows into an upper triangle, merge triangles up a tree of ranks.

    fold:   R <- R factor of [ R ; B ]     (R: n x n upper, B: k x n rows)
    merge:  R <- R factor of [ R ; S ]     (S: n x n upper)

Both are LAPACK's ``tpqrt`` (QR of a triangle on top of a "pentagonal" block: B dense, or S
triangular), in place, with no stacked copy: 2 k n^2 flops for a fold, 2 n^3 / 3 for a merge
(``dgeqrf`` on the stacked pair costs 10 n^3 / 3 for the merge and holds twice the rows). The
Q factor is never formed; the right-hand side b is the last column of [A | b].

Across ranks the triangles meet up a binary tree (rank r + s sends to rank r at level s), each
sent PACKED (the upper triangle column by column, in chunks of at most CHUNK entries, so no
message nears MPI's 2^31-element count). A rank holds its triangle, one received triangle and
one chunk; rank 0 ends with the triangle of all rows.
"""

import numpy as np
import scipy.linalg.lapack

from pargap.errors import PargapError

PANEL = 64
"""Columns per tpqrt panel (LAPACK's nb): T is PANEL x n. With one BLAS thread (as under MPI),
folding 8000 rows into n = 1001 ran at 11.3 / 11.3 / 7.5 GFLOP/s for nb = 32 / 64 / 128, and 3000
rows into n = 3001 at 11.6 / 15.0 / 13.9 (dgeqrf of the same rows: 3.0 and 4.3 GFLOP/s)."""

CHUNK = 1 << 22
"""float64 entries per message of a packed triangle (32 MiB)."""


def empty_triangle(n):
    """An n x n Fortran-ordered zero triangle: the R factor of no rows."""
    return np.zeros((n, n), order="F")


PAGE = 4096


def triangle_resident_bytes(n):
    """Resident bytes of a triangle from :func:`empty_triangle` once folded into or received: only
    the upper part of each column is written (tpqrt, the packed receive), so the pages of the zero
    lower part are never touched: n (n + 1) / 2 float64, plus half a page per column."""
    return 8.0 * n * (n + 1) / 2 + n * PAGE / 2


def fold(R, rows):
    """R <- the R factor of [R ; rows], in place (R: (n, n) Fortran float64 upper triangle; rows:
    (k, n), k >= 0, overwritten by the reflectors when Fortran-ordered float64, else copied once).
    Signs of R's rows are LAPACK's (any sign is a valid R)."""
    if rows.shape[0] == 0:
        return R
    _tpqrt(R, rows, 0)
    return R


def merge(R, S):
    """R <- the R factor of [R ; S] for two (n, n) upper triangles, in place (S is overwritten)."""
    _tpqrt(R, S, S.shape[0])
    return R


def fold_trapezoid(R, T):
    """R <- the R factor of [R ; T] for an upper trapezoidal T (k, n), k <= n (T[i, j] = 0 for
    j < i), e.g. the prior rows [U | 0]: 2 k^2 n / 3 flops instead of a dense fold's 2 k n^2."""
    _tpqrt(R, T, T.shape[0])
    return R


def _tpqrt(R, B, l):
    n = R.shape[0]
    if R.shape != (n, n) or B.shape[1] != n or not R.flags.f_contiguous or R.dtype != np.float64:
        raise ValueError(f"tpqrt needs an (n, n) Fortran float64 triangle and (k, n) rows, got {R.shape}, {B.shape}")
    if n == 0 or B.shape[0] == 0:
        return
    r, _, _, info = scipy.linalg.lapack.dtpqrt(l, max(1, min(PANEL, n)), R, B, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise PargapError(f"QR factorisation failed (LAPACK dtpqrt info={info})")
    if r is not R:  # f2py copies arrays it cannot use in place; R is checked above, so it never should
        R[...] = r


def packed_chunks(n, chunk=None):
    """Column ranges (j0, j1) whose packed upper parts (column j has j + 1 entries) hold at most
    ``chunk`` entries each (default CHUNK; one column may exceed it when j + 1 > chunk)."""
    chunk = chunk or CHUNK
    ranges, j0 = [], 0
    while j0 < n:
        j1, size = j0, 0
        while j1 < n and (j1 == j0 or size + j1 + 1 <= chunk):
            size += j1 + 1
            j1 += 1
        ranges.append((j0, j1))
        j0 = j1
    return ranges


def _packed_size(j0, j1):
    return (j1 * (j1 + 1) - j0 * (j0 + 1)) // 2


def send_triangle(comm, R, dest, tag, chunk=None):
    """Send the upper triangle of R (n, n) to ``dest``, packed column by column in chunks of at
    most ``chunk`` entries (default CHUNK)."""
    n, chunk = R.shape[0], chunk or CHUNK
    buffer = np.empty(min(chunk, n * (n + 1) // 2) if n else 0)
    for j0, j1 in packed_chunks(n, chunk):
        size = _packed_size(j0, j1)
        part = buffer[:size] if size <= len(buffer) else np.empty(size)
        at = 0
        for j in range(j0, j1):
            part[at:at + j + 1] = R[:j + 1, j]
            at += j + 1
        comm.Send(part, dest=dest, tag=tag)


def receive_triangle(comm, S, source, tag, chunk=None):
    """Receive a triangle sent by :func:`send_triangle` (with the same ``chunk``) into the upper
    part of S (n, n); the part below the diagonal is left as it was (zero it first where it matters)."""
    n, chunk = S.shape[0], chunk or CHUNK
    buffer = np.empty(min(chunk, n * (n + 1) // 2) if n else 0)
    for j0, j1 in packed_chunks(n, chunk):
        size = _packed_size(j0, j1)
        part = buffer[:size] if size <= len(buffer) else np.empty(size)
        comm.Recv(part, source=source, tag=tag)
        at = 0
        for j in range(j0, j1):
            S[:j + 1, j] = part[at:at + j + 1]
            at += j + 1


def reduce_to_root(comm, R, has_rows=True, tag=0x7151):
    """Tree reduction of the ranks' triangles R (n, n) to rank 0: returns (R of all ranks' rows, True)
    on rank 0 (its own R, merged in place) and (R zeroed, False) elsewhere: the R factor of all
    rows is then rank 0's, and the other ranks start again from no rows. ``has_rows``: False if
    this rank's R is the empty triangle (its transfer and merge are skipped). Collective."""
    rank, size = comm.Get_rank(), comm.Get_size()
    n = R.shape[0]
    S = None
    step = 1
    while step < size:
        if rank % (2 * step) == step:
            comm.send(bool(has_rows), dest=rank - step, tag=tag)
            if has_rows:
                send_triangle(comm, R, rank - step, tag + 1)
                R[...] = 0.0
            return R, False
        if rank % (2 * step) == 0 and rank + step < size:
            if comm.recv(source=rank + step, tag=tag):
                if has_rows:
                    S = empty_triangle(n) if S is None else _zeroed(S)
                    receive_triangle(comm, S, rank + step, tag + 1)
                    merge(R, S)
                else:  # nothing here yet: the received triangle is this rank's R
                    receive_triangle(comm, _zeroed(R), rank + step, tag + 1)
                has_rows = True
        step *= 2
    return R, has_rows


def _zeroed(S):
    S[...] = 0.0
    return S
