"""Compiled loops of the SOAP descriptor (numba): density coefficients and power spectrum."""

import numpy as np

from pargap.compiled import numba


@numba.njit(cache=True, nogil=True)
def density_coefficients(R, Y, owner, channel, l_of_lm, n_centres, n_species):
    """c_{i s n lm} = sum over the pairs p of centre i with a neighbour of channel s of
    R_{p n l(lm)} Y_{p lm}. R (P, n, l_max+1), Y (P, (l_max+1)^2) -> (N, S, n, (l_max+1)^2)."""
    P, n_max, _ = R.shape
    LM = Y.shape[1]
    c = np.zeros((n_centres, n_species, n_max, LM))
    for p in range(P):
        i = owner[p]
        s = channel[p]
        for a in range(n_max):
            for lm in range(LM):
                c[i, s, a, lm] += R[p, a, l_of_lm[lm]] * Y[p, lm]
    return c


@numba.njit(cache=True, nogil=True)
def power_spectrum(c, kk, kp, scale):
    """p_{i q l} = scale_{q l} sum_{m} c_{i kk_q lm} c_{i kp_q lm}, laid out q-major, l fastest.
    c (N, K, (l_max+1)^2); kk, kp (Q,) channel pairs; scale (Q, l_max+1) -> (N, Q (l_max+1))."""
    N = c.shape[0]
    Q, L1 = scale.shape
    v = np.zeros((N, Q * L1))
    for i in range(N):
        for q in range(Q):
            k = kk[q]
            k2 = kp[q]
            for l in range(L1):
                acc = 0.0
                for lm in range(l * l, (l + 1) * (l + 1)):
                    acc += c[i, k, lm] * c[i, k2, lm]
                v[i, q * L1 + l] = acc * scale[q, l]
    return v


@numba.njit(cache=True, nogil=True)
def soap_gradients(c, Y, dY, R, dR, u, r, owner, channel, kk, kp, scale, x_unit, norm, normalise, n_centres):
    """Gradient rows of the SOAP vectors: rows 0..N-1 the centres, then one per pair (slot).

    For a pair p of centre i with a neighbour of channel s at distance r along u, only the
    coefficients of channel s move: dc_{k lm} = dR_nl u Y_lm + R_nl dY_lm / r (k = s n_max + n).
    With A_{k'l} = sum_{m in l} Y_lm c_{k' lm} and B_{k'l} = sum_{m in l} (dY_lm / r) c_{k' lm},
    dp_{(k k') l} = scale_{(k k') l} ([k in s] (dR_nl u A_k'l + R_nl B_k'l) + [k' in s] (...k <-> k')).
    Normalised: d(v / |v|) = (dv - x (x . dv)) / |v|. A centre row is minus the sum of its pairs'.
    Returns (N + P, 3, D)."""
    P = r.shape[0]
    K = c.shape[1]
    Q, L1 = scale.shape
    n_max = R.shape[1]
    D = Q * L1 + 1
    out = np.zeros((n_centres + P, 3, D))
    A = np.empty((K, L1))
    B = np.empty((3, K, L1))
    for p in range(P):
        i = owner[p]
        s = channel[p]
        inv_r = 1.0 / r[p]
        for k in range(K):
            for l in range(L1):
                a = 0.0
                b0 = 0.0
                b1 = 0.0
                b2 = 0.0
                for lm in range(l * l, (l + 1) * (l + 1)):
                    ck = c[i, k, lm]
                    a += Y[p, lm] * ck
                    b0 += dY[p, 0, lm] * ck
                    b1 += dY[p, 1, lm] * ck
                    b2 += dY[p, 2, lm] * ck
                A[k, l] = a
                B[0, k, l] = b0 * inv_r
                B[1, k, l] = b1 * inv_r
                B[2, k, l] = b2 * inv_r
        row = n_centres + p
        for q in range(Q):
            k = kk[q]
            k2 = kp[q]
            in1 = k // n_max == s
            in2 = k2 // n_max == s
            if not (in1 or in2):
                continue
            n1 = k % n_max
            n2 = k2 % n_max
            for l in range(L1):
                sc = scale[q, l]
                for cc in range(3):
                    val = 0.0
                    if in1:
                        val += dR[p, n1, l] * u[p, cc] * A[k2, l] + R[p, n1, l] * B[cc, k2, l]
                    if in2:
                        val += dR[p, n2, l] * u[p, cc] * A[k, l] + R[p, n2, l] * B[cc, k, l]
                    out[row, cc, q * L1 + l] = sc * val
        if normalise:
            inv = 1.0 / norm[i]
            for cc in range(3):
                dot = 0.0
                for d in range(D - 1):
                    dot += out[row, cc, d] * x_unit[i, d]
                for d in range(D - 1):
                    out[row, cc, d] = (out[row, cc, d] - x_unit[i, d] * dot) * inv
        for cc in range(3):
            for d in range(D):
                out[i, cc, d] -= out[row, cc, d]
    return out


@numba.njit(cache=True, nogil=True)
def hermite_radial(r, h, G, dG, fc, dfc, gradients):
    """Cubic Hermite interpolation of tabulated radial functions, times the cutoff function.

    G, dG (n_grid, F): values and slopes on the grid r_k = k h; r (P,), fc, dfc (P,).
    Returns R = fc G(r) (P, F) and, if gradients, dR/dr = fc G'(r) + dfc G(r) (else empty)."""
    P = r.shape[0]
    F = G.shape[1]
    R = np.empty((P, F))
    dR = np.empty((P, F)) if gradients else np.empty((0, F))
    last = G.shape[0] - 2
    for p in range(P):
        t = r[p] / h
        k = min(int(t), last)
        s = t - k
        s2 = s * s
        s3 = s2 * s
        h00 = 2 * s3 - 3 * s2 + 1
        h10 = (s3 - 2 * s2 + s) * h
        h01 = 3 * s2 - 2 * s3
        h11 = (s3 - s2) * h
        d00 = (6 * s2 - 6 * s) / h
        d10 = 3 * s2 - 4 * s + 1
        d11 = 3 * s2 - 2 * s
        for f in range(F):
            g0 = G[k, f]
            g1 = G[k + 1, f]
            m0 = dG[k, f]
            m1 = dG[k + 1, f]
            value = h00 * g0 + h10 * m0 + h01 * g1 + h11 * m1
            R[p, f] = fc[p] * value
            if gradients:
                slope = d00 * (g0 - g1) + d10 * m0 + d11 * m1
                dR[p, f] = fc[p] * slope + dfc[p] * value
    return R, dR
