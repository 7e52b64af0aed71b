"""A rank's rows folded into their triangle R (A = Q R, Q never formed), a block at a time.

R is upper trapezoidal, (min(n, D), D) for n rows of width D: a QR of the stacked rows while R
has fewer than D rows, then LAPACK tpqrt (a triangle on top of a block of rows), D rows at a
time, so the transient is two D x D blocks however many rows. The ranks' triangles are then
merged by the TSQR tree, :func:`pargap.linalg.solve.reduce_triangles`.
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
        R = _tpqrt(R, block)
    return R


def _tpqrt(R, B):
    """R of [R ; B], R (D, D) upper triangular and B (m, D) full (LAPACK dtpqrt with l = 0)."""
    nb = max(1, min(32, R.shape[0]))
    R, _, _, info = scipy.linalg.lapack.dtpqrt(0, nb, R, B, overwrite_a=1, overwrite_b=1)
    if info != 0:
        raise PargapError(f"QR of the rows failed (LAPACK dtpqrt info={info})")
    return R
