"""From the least-squares triangle to the coefficients: back-substitution and condition estimate.

The QR factor of the augmented matrix [A | b] (A = [Lambda^-1/2 K_NM ; U], b = [Lambda^-1/2 y ; 0])
is the (M+1) x (M+1) upper triangle

    R_aug = [ R  c   ]        R alpha = c,    |rho| = ||A alpha - b||   (the residual)
            [ 0  rho ]

The condition number reported (and warned about) is that of R D^-1, D = diag of R's column norms
(= A's column norms): the column-equilibrated factor, so that a model's delta, which scales its
columns, does not change it. Nothing here communicates except through ``comm.bcast`` in Lanczos.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack

from pargap.errors import PargapError

CONDITION_WARNING = 1e12
"""Equilibrated condition estimate beyond which the fit warns (float64 keeps ~4 digits there)."""

EXACT_CONDITION_UP_TO = 500
"""Up to this M the condition number is exact (SVD); beyond, Lanczos (1.1 s against 0.3 s at M = 1000,
one thread; 5 s against 0.2 s at M = 3000)."""


@dataclass
class Solution:
    alpha: np.ndarray  # (M,)
    condition: float  # 2-norm condition estimate of the column-equilibrated R (= of A D^-1)
    residual: float  # ||A alpha - b||
    factor: np.ndarray | None = None  # (M, M) upper R with R^T R = A^T A, on rank 0 only (GP variance)


def not_positive_definite():
    return PargapError("K_MM is not positive definite: raise sparse_jitter (e.g. 1e-8) or use fewer, more "
                       "distinct sparse points")


def rank_deficient():
    return PargapError("the least-squares matrix is rank deficient: raise sparse_jitter or use fewer sparse points")


def not_finite():
    return PargapError("the least-squares matrix has non-finite entries (NaN or infinity in the rows)")


def solve_triangle(R_aug, keep_factor=True):
    """Solution of the augmented triangle R_aug ((M+1) x (M+1), Fortran-ordered upper, prior rows
    already folded in). No copy of the triangle is made: the solves run on R_aug itself with its
    corner rho set to 1 while they run (then [R c; 0 1]^-1 [x; 0] = [R^-1 x; 0] and
    [R c; 0 1] [x; 0] = [R x; 0]). factor: a view of R in R_aug when ``keep_factor``."""
    M = R_aug.shape[0] - 1
    diagonal = np.abs(np.diagonal(R_aug)[:M])
    if not np.all(np.isfinite(diagonal)):
        raise not_finite()
    if np.any(diagonal == 0.0):
        raise rank_deficient()
    rho = R_aug[M, M]
    R_aug[M, M] = 1.0
    try:
        x = scipy.linalg.blas.dtrsv(R_aug, _unit(M))  # [-alpha; 1]
        if not np.all(np.isfinite(R_aug[:M, M])):
            raise not_finite()
        alpha = -x[:M]
        if not np.all(np.isfinite(alpha)):
            raise PargapError("the solve produced non-finite coefficients: raise sparse_jitter or use fewer "
                              "sparse points")
        condition = equilibrated_condition(R_aug)
    finally:
        R_aug[M, M] = rho
    return Solution(alpha, condition, float(abs(rho)), R_aug[:M, :M] if keep_factor else None)


def _unit(M):
    e = np.zeros(M + 1)
    e[M] = 1.0
    return e


def column_norms(R, columns, panel=256):
    """Euclidean norms of the first ``columns`` columns of the upper triangle R, panel by panel
    (no temporary as large as R)."""
    norms = np.empty(columns)
    for j in range(0, columns, panel):
        part = R[:j + panel, j:j + panel][:, :columns - j]
        norms[j:j + part.shape[1]] = np.sqrt(np.einsum("ij,ij->j", part, part))
    return norms


def equilibrated_condition(R_aug, exact_up_to=EXACT_CONDITION_UP_TO):
    """2-norm condition number of R D^-1 (R the leading M x M triangle of R_aug, whose corner must be
    1 while this runs, see :func:`solve_triangle`; D its column norms): by SVD up to M =
    exact_up_to, else by Lanczos on (R D^-1)^T (R D^-1) and its inverse (:func:`largest_eigenvalue`)."""
    from pargap.parallel import SerialComm

    M = R_aug.shape[0] - 1
    d = column_norms(R_aug, M)
    if M <= exact_up_to:
        s = scipy.linalg.svdvals(R_aug[:M, :M] / d, check_finite=False)
        return float(s[0] / s[-1]) if s[-1] > 0 else np.inf
    blas = scipy.linalg.blas

    def padded(x):
        return np.append(x, 0.0)

    def gram(x):  # D^-1 R^T R D^-1 x
        y = blas.dtrmv(R_aug, padded(x / d))
        return blas.dtrmv(R_aug, y, trans=1)[:M] / d

    def inverse_gram(x):  # D R^-1 R^-T D x
        y = blas.dtrsv(R_aug, padded(x * d), trans=1)  # [R^-T D x; -c^T R^-T D x]
        y[M] = 0.0
        return blas.dtrsv(R_aug, y)[:M] * d

    return float(np.sqrt(largest_eigenvalue(gram, M, SerialComm()) * largest_eigenvalue(inverse_gram, M, SerialComm())))


def warn_condition(solution):
    if solution.condition > CONDITION_WARNING:
        warnings.warn(
            f"ill-conditioned fit (condition estimate of the equilibrated factor {solution.condition:.2e}); the "
            "coefficients may be inaccurate: raise sparse_jitter or use fewer sparse points",
            RuntimeWarning,
            stacklevel=3,
        )


def largest_eigenvalue(apply, n, comm, steps=80, rtol=1e-12):
    """Largest eigenvalue of a symmetric positive semi-definite n x n operator (``apply(x)``
    returns the product, the same on every rank) by Lanczos with full reorthogonalisation. The
    largest Ritz value is a lower bound that rises to it, fast at the ends of the spectrum;
    rank 0 decides when it has settled, so every rank runs the same steps. Memory: steps n-vectors."""
    steps = min(steps, n)
    Q = np.zeros((steps, n))  # the Lanczos basis, by rows
    q = np.random.default_rng(0).uniform(0.5, 1.5, n)  # no sign pattern to be orthogonal to
    Q[0] = q / np.linalg.norm(q)
    diagonal, off = [], []
    ritz = 0.0
    for j in range(steps):
        w = apply(Q[j])
        diagonal.append(float(Q[j] @ w))
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        beta = float(np.linalg.norm(w))
        previous = ritz
        ritz = float(scipy.linalg.eigvalsh_tridiagonal(np.array(diagonal), np.array(off))[-1]) if off \
            else diagonal[0]
        if not np.isfinite(ritz):
            return np.inf
        settled = beta <= 1e-14 * max(abs(ritz), 1e-300) or abs(ritz - previous) <= rtol * abs(ritz)
        if comm.bcast(settled, root=0) or j + 1 == steps:
            break
        off.append(beta)
        Q[j + 1] = w / beta
    return max(ritz, 0.0)
