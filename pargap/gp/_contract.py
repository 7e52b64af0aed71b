"""Compiled inner loop of the force and virial rows (numba): one pass over the kernel-gradient block.

For gradient rows g (descriptor i = owner_g, atom a, slot position R_g) and sparse points m:

    dK_gcm = w_m [ w_i (A_im T_gcm + B_im u_gc) + K_im dw_gc ]       (d/dr_gc of w_i k(x_i, s_m) w_m)
    F_acm -= dK_gcm,     W_clm -= dK_gcm R_gl

with T_gcm = (g dX_gc) . s_m from one matrix product and u_gc = (g dX_gc) . x_i.
"""

import numpy as np

from pargap.compiled import numba


@numba.njit(cache=True, nogil=True)
def accumulate_rows(T, u, A, B, K, w, dw, w_s, owner, atom, position, forces, virial):
    """Add one block of gradient rows into forces (n_atoms, 3, M) and virial (3, 3, M) in place.

    T (g, 3, M); u (g, 3) or empty; A, K (n, M); B (n, M) or empty; w (n,); dw (g, 3); w_s (M,);
    owner, atom (g,); position (g, 3)."""
    G = T.shape[0]
    M = T.shape[2]
    use_b = B.shape[0] > 0
    for g in range(G):
        i = owner[g]
        a = atom[g]
        wi = w[i]
        r0, r1, r2 = position[g, 0], position[g, 1], position[g, 2]
        for c in range(3):
            dwc = dw[g, c]
            uc = u[g, c] if use_b else 0.0
            for m in range(M):
                v = A[i, m] * T[g, c, m]
                if use_b:
                    v += B[i, m] * uc
                d = w_s[m] * (wi * v + K[i, m] * dwc)
                forces[a, c, m] -= d
                virial[c, 0, m] -= d * r0
                virial[c, 1, m] -= d * r1
                virial[c, 2, m] -= d * r2


EMPTY = np.zeros((0, 0))
