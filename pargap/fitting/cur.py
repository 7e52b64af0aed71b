"""gap_fit's CUR leverage scores of the candidate descriptors, from a distributed QR.

gap_fit (``cur_decomposition`` on the D x n matrix of candidate columns, n_iter = 1): SVD
X^T = V S W^T; rank k = floor(#(s > 1e-13) / 2) (absolute threshold, as LAPACK resolves the
singular values of X itself); leverage p_j = min(1, (m / k) sum_{r<=k} V_jr^2); draw u_j ~ U(0, 1)
and take the m smallest u_j - p_j.

Here X^T (n, D) is spread over the ranks by rows. Its triangle R (D, D), X^T = Q R, is folded
from each rank's rows (LAPACK tpqrt, chunks of D rows) and merged up a binary tree of ranks;
rank 0 takes the SVD R = U_R S W^T, whose singular values and right vectors are those of X^T,
and broadcasts S and W_k. Each rank then has its own rows of V_k = X^T W_k S_k^-1. Memory per
rank: its rows plus a few D x D triangles, whatever the number of ranks.
"""

import numpy as np
import scipy.linalg

from pargap.linalg.triangle import triangle
from pargap.parallel import broadcast

SINGULAR_TOLERANCE = 1e-13  # gap_fit's TOL_SVD


def leverage(comm, x, m):
    """gap_fit's CUR leverage p (n_p,) of this rank's candidate rows x (n_p, D), for m points."""
    D = x.shape[1]
    R = triangle(comm, x)
    s = np.empty(D)
    if comm.Get_rank() == 0:
        try:
            _, s_R, Wt = scipy.linalg.svd(R, check_finite=False, lapack_driver="gesdd")
        except np.linalg.LinAlgError:  # gesdd's rare failure to converge; gap_fit's own driver
            _, s_R, Wt = scipy.linalg.svd(R, overwrite_a=True, check_finite=False, lapack_driver="gesvd")
        s[:] = s_R
    broadcast(comm, s, 0)
    k = max(1, int(np.sum(s > SINGULAR_TOLERANCE)) // 2)
    W_k = np.empty((k, D))
    if comm.Get_rank() == 0:
        W_k[:] = Wt[:k]
    broadcast(comm, W_k, 0)
    V = (x @ W_k.T) / s[:k]
    return np.minimum(1.0, (m / k) * np.einsum("jr,jr->j", V, V))
