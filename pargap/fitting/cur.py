"""gap_fit's CUR leverage scores of the candidate descriptors, from a distributed QR.

gap_fit (``cur_decomposition`` on the D x n matrix of candidate columns, n_iter = 1): SVD
X^T = V S W^T; rank k = floor(#(s > 1e-13) / 2) (absolute threshold, as LAPACK resolves the
singular values of X itself); leverage p_j = min(1, (m / k) sum_{r<=k} V_jr^2); draw u_j ~ U(0, 1)
and take the m smallest u_j - p_j.

Here X^T (n, D) is spread over the ranks by rows. Its triangle R (min(n, D), D), X^T = Q R, is
folded from each rank's rows, D at a time (:func:`pargap.linalg.tsqr.fold`), and merged up the
TSQR tree of ranks; rank 0 takes the SVD R = U_R S W^T, whose singular values and right vectors
are those of X^T, and broadcasts S and W_k. Each rank then has its own rows of V_k = X^T W_k S_k^-1,
formed a chunk of rows at a time. Memory per rank beyond its candidates: two D x D triangles
(three on rank 0 for the SVD) and one chunk, whatever the number of ranks and candidates.
"""

import numpy as np
import scipy.linalg

from pargap.linalg import tsqr
from pargap.parallel import broadcast, total

SINGULAR_TOLERANCE = 1e-13  # gap_fit's TOL_SVD
CHUNK_BYTES = 16 * 2**20
"""Candidates per chunk of V_k: about this many bytes of rows and their V_k."""


def leverage(comm, x, m, rows=None):
    """gap_fit's CUR leverage p (n_p,) of this rank's candidates, for m points: the rows ``rows``
    of x (n, D) (default all), taken a chunk at a time (no copy of all the candidates)."""
    rows = np.arange(len(x)) if rows is None else rows
    D = x.shape[1]
    R = tsqr.empty_triangle(D)
    for first in range(0, len(rows), D):  # copies of D rows: tpqrt overwrites them
        tsqr.fold(R, np.asfortranarray(x[rows[first:first + D]], dtype=float))
    R, _ = tsqr.reduce_to_root(comm, R, has_rows=len(rows) > 0)  # (D, D) of all candidates on rank 0
    s = np.zeros(min(D, total(comm, len(x))))
    if comm.Get_rank() == 0:
        try:
            _, sv, Wt = scipy.linalg.svd(R, full_matrices=False, check_finite=False, lapack_driver="gesdd")
        except np.linalg.LinAlgError:  # gesdd's rare failure to converge; gap_fit's own driver
            _, sv, Wt = scipy.linalg.svd(R, full_matrices=False, check_finite=False, lapack_driver="gesvd")
        s[:] = sv[:len(s)]  # the tree returns R zero-padded to (D, D): its extra singular values are 0
    broadcast(comm, s, 0)
    k = max(1, int(np.sum(s > SINGULAR_TOLERANCE)) // 2)
    W_k = np.empty((k, D))
    if comm.Get_rank() == 0:
        W_k[:] = Wt[:k]
    broadcast(comm, W_k, 0)
    p = np.empty(len(rows))
    step = max(D, CHUNK_BYTES // (8 * (D + k)))
    for first in range(0, len(rows), step):
        V = (x[rows[first:first + step]] @ W_k.T) / s[:k]
        p[first:first + step] = np.minimum(1.0, (m / k) * np.einsum("jr,jr->j", V, V))
    return p
