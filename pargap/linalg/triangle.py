"""The triangle R of a tall matrix whose rows are spread over the ranks: A = Q R, Q never formed.

Each rank folds its rows into a D x D triangle (LAPACK tpqrt: triangle on top of a block of rows,
D rows at a time, so the transient is two D x D blocks whatever the number of rows); the
triangles are then merged pairwise up a binary tree of ranks (tpqrt of a triangle on a triangle),
rank 0 holding the result. No rank holds more than two triangles, whatever the number of ranks.
"""

import numpy as np
import scipy.linalg

from pargap.errors import PargapError


def fold(R, rows):
    """Triangle R (D, D) of [R ; rows]: R <- R' with [R ; rows] = Q R' (LAPACK dtpqrt, in place
    where LAPACK allows), chunks of D rows at a time. rows (n, D), any n >= 0."""
    D = R.shape[0]
    for start in range(0, len(rows), D):
        block = np.array(rows[start:start + D], dtype=float, order="F")  # a copy: tpqrt overwrites it
        R = _tpqrt(R, block, 0)
    return R


def _tpqrt(R, B, l):
    nb = max(1, min(32, R.shape[0]))
    R, _, _, info = scipy.linalg.lapack.dtpqrt(l, nb, R, B, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise PargapError(f"QR of the rows failed (LAPACK dtpqrt info={info})")
    return R


def triangle(comm, x):
    """R (D, D) of the rows of x stacked over all ranks, on rank 0 (None on the others).
    x (n_p, D): this rank's rows, any n_p >= 0."""
    D = x.shape[1]
    R = fold(np.zeros((D, D), order="F"), x)
    rank, size = comm.Get_rank(), comm.Get_size()
    step = 1
    while step < size:
        if rank % (2 * step) == step:
            comm.Send(np.ascontiguousarray(R), dest=rank - step, tag=step)
            return None
        if rank + step < size:
            other = np.empty((D, D))
            comm.Recv(other, source=rank + step, tag=step)
            R = _tpqrt(R, np.asfortranarray(other), D)
        step *= 2
    return R
