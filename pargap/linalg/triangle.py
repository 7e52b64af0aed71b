"""The triangle R of a matrix whose rows are spread over the ranks: A = Q R, Q never formed.

R is upper trapezoidal, (min(n, D), D) for n rows of width D: each rank folds its rows into it
(a QR of the stacked rows while R has fewer than D rows, then LAPACK tpqrt, a triangle on top of
a block of rows, D rows at a time, so the transient is two D x D blocks however many rows); the
ranks' triangles are merged pairwise up a binary tree of ranks (tpqrt of a triangle on a
triangle), rank 0 holding the result. No rank holds more than two triangles, whatever P.
"""

import numpy as np
import scipy.linalg

from pargap.errors import PargapError


def fold(R, rows):
    """Triangle of [R ; rows] -> (min(k + n, D), D). R (k, D) upper trapezoidal, k <= D (k = 0
    to start); rows (n, D), any n >= 0, not modified."""
    D = R.shape[1]
    start = 0
    if R.shape[0] < D and len(rows):
        start = D - R.shape[0]
        stacked = np.vstack([R, rows[:start]])
        R = scipy.linalg.qr(stacked, mode="r", overwrite_a=True, check_finite=False)[0][:D]
        R = np.asfortranarray(R)
    for first in range(start, len(rows), D):
        block = np.array(rows[first:first + D], dtype=float, order="F")  # a copy: tpqrt overwrites it
        R = _tpqrt(R, block, 0)
    return R


def merge(R, other):
    """Triangle of [R ; other] for two trapezoids of the same width (tpqrt's triangular form
    when both are square)."""
    if R.shape[0] == R.shape[1] == other.shape[0]:
        return _tpqrt(R, np.asfortranarray(other), R.shape[1])
    if R.shape[0] < other.shape[0]:
        R, other = other, R
    return fold(np.asfortranarray(R), other)


def _tpqrt(R, B, l):
    nb = max(1, min(32, R.shape[0]))
    R, _, _, info = scipy.linalg.lapack.dtpqrt(l, nb, R, B, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise PargapError(f"QR of the rows failed (LAPACK dtpqrt info={info})")
    return R


def triangle(comm, x):
    """R (min(n, D), D) of the rows of x stacked over all ranks (n rows in all), on rank 0;
    None on the others. x (n_p, D): this rank's rows, any n_p >= 0."""
    D = x.shape[1]
    R = fold(np.zeros((0, D), order="F"), x)
    rank, size = comm.Get_rank(), comm.Get_size()
    step = 1
    while step < size:
        if rank % (2 * step) == step:
            comm.send(R.shape[0], dest=rank - step, tag=2 * step)
            comm.Send(np.ascontiguousarray(R), dest=rank - step, tag=2 * step + 1)
            return None
        if rank + step < size:
            other = np.empty((comm.recv(source=rank + step, tag=2 * step), D))
            comm.Recv(other, source=rank + step, tag=2 * step + 1)
            R = merge(R, other)
        step *= 2
    return R
