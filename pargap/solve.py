"""The sparse GP solve as a least-squares problem, by QR, never by the normal equations.

    A = [ Lambda^(-1/2) K_NM ]    b = [ Lambda^(-1/2) y ]    K_MM + jitter I = U^T U
        [        U           ]        [       0         ]

    alpha = argmin ||A alpha - b||:   A = Q R,  R alpha = Q^T b

``serial_solve`` is the reference on the whole A. ``tsqr_solve`` is the tall-skinny QR over
row blocks distributed on the ranks: each rank factorises [A_p | b_p] in place, then the
(M+1)-column R factors are combined pairwise up a binary tree; the root adds the prior rows
[U | 0], back-substitutes and broadcasts alpha. Memory per rank: its rows plus a few (M+1)^2
triangles.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from pargap.errors import PargapError

CONDITION_WARNING = 1e12


@dataclass
class Solution:
    alpha: np.ndarray  # (M,)
    condition: float  # condition number estimate of R (= of A)
    residual: float  # ||A alpha - b||
    factor: np.ndarray | None = None  # (M, M) upper R with R^T R = A^T A, on rank 0 only (GP variance)


def cholesky_factor(K_mm):
    """Upper U with K_MM = U^T U (with the jitter already on the diagonal)."""
    try:
        return scipy.linalg.cholesky(K_mm, lower=False)
    except np.linalg.LinAlgError:
        raise PargapError(
            "K_MM is not positive definite: raise sparse_jitter (e.g. 1e-8) or use fewer, more "
            "distinct sparse points"
        ) from None


def _r_of(block):
    """R factor (k, M+1) of a block [A | b], k = min(rows, M+1), by LAPACK dgeqrf. A Fortran-ordered
    float64 block is factorised in place (and destroyed) without a copy; others are copied once."""
    if block.shape[0] == 0:
        return np.zeros((0, block.shape[1]))
    a = np.asfortranarray(block, dtype=float)
    lwork, info = scipy.linalg.lapack.dgeqrf_lwork(*a.shape)  # blocked Householder workspace
    qr, _, _, info = scipy.linalg.lapack.dgeqrf(a, lwork=max(int(lwork), 1), overwrite_a=True)
    if info != 0:
        raise PargapError(f"QR factorisation failed (LAPACK dgeqrf info={info})")
    return np.triu(qr[: min(block.shape)])


def condition_estimate(R):
    """2-norm condition number of the triangle R (that of A): exact by SVD up to M = 4000, beyond
    that the lower bound max|R_ii| / min|R_ii|."""
    if R.shape[0] <= 4000:
        s = scipy.linalg.svdvals(R, check_finite=False)
        return float(s[0] / s[-1]) if s[-1] > 0 else np.inf
    d = np.abs(np.diag(R))
    return float(d.max() / d.min())


def _back_substitute(R_aug, M):
    R = R_aug[:M, :M]
    c = R_aug[:M, M]
    residual = abs(R_aug[M, M]) if R_aug.shape[0] > M else 0.0
    if R.shape[0] < M or np.any(np.abs(np.diag(R)) == 0.0):
        raise PargapError("the least-squares matrix is rank deficient: raise sparse_jitter or use fewer sparse points")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(c))):
        raise PargapError("the least-squares matrix has non-finite entries (NaN or infinity in the rows)")
    try:
        condition = condition_estimate(R)
        alpha = scipy.linalg.solve_triangular(R, c, lower=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise PargapError(f"the triangular solve failed ({exc}): raise sparse_jitter or use fewer sparse points") from None
    if not np.all(np.isfinite(alpha)):
        raise PargapError("the solve produced non-finite coefficients: raise sparse_jitter or use fewer sparse points")
    return Solution(alpha, float(condition), float(residual), R)


def _warn_condition(solution):
    if solution.condition > CONDITION_WARNING:
        warnings.warn(
            f"ill-conditioned fit (condition estimate {solution.condition:.2e}); the coefficients may be "
            "inaccurate: raise sparse_jitter or use fewer sparse points",
            RuntimeWarning,
            stacklevel=3,
        )


def serial_solve(A_nm, b, U):
    """Reference solve on one process. A_nm: (N, M) = Lambda^(-1/2) K_NM; b: (N,); U: (M, M)."""
    return serial_solve_block(np.column_stack([A_nm, b]), U)


def serial_solve_block(block, U):
    """Serial solve of block = [Lambda^(-1/2) K_NM | Lambda^(-1/2) y] (N, M+1) (destroyed if
    Fortran-ordered), with the prior rows [U | 0]."""
    solution = _back_substitute(_with_prior(_r_of(block), U), U.shape[0])
    _warn_condition(solution)
    return solution


def _with_prior(R, U):
    """R factor of [R ; U | 0]: the prior rows enter after the data rows are reduced, (M+1, M+1) at most."""
    M = U.shape[0]
    return _r_of(np.vstack([R, np.column_stack([U, np.zeros(M)])]))


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


def tsqr_solve(comm, A_local, b_local, U):
    """Tall-skinny QR over ranks: A_local (n_p, M) and b_local (n_p,) are this rank's rows; U (M, M)
    is needed on rank 0 only."""
    return tsqr_solve_block(comm, np.column_stack([A_local, b_local]), U)


def tsqr_solve_block(comm, block, U):
    """Tall-skinny QR over ranks. Every rank passes its rows block = [A_p | b_p] (n_p, M+1),
    factorised in place when Fortran-ordered; U (M, M) is used on rank 0 only. Every rank returns
    the same Solution (alpha broadcast from rank 0). Beyond its block a rank holds a few
    (M+1) x (M+1) triangles while R factors are merged up the tree (sent as raw buffers)."""
    M = block.shape[1] - 1
    rank, size = comm.Get_rank(), comm.Get_size()
    R = _r_of(block)
    step = 1
    while step < size:
        if rank % (2 * step) == step:
            comm.send(R.shape, dest=rank - step, tag=2 * step)
            comm.Send(np.ascontiguousarray(R), dest=rank - step, tag=2 * step + 1)
            R = None
            break
        if rank % (2 * step) == 0 and rank + step < size:
            shape = comm.recv(source=rank + step, tag=2 * step)
            other = np.empty(shape)
            comm.Recv(other, source=rank + step, tag=2 * step + 1)
            stacked = np.empty((R.shape[0] + shape[0], M + 1), order="F")
            stacked[: R.shape[0]] = R
            stacked[R.shape[0]:] = other
            del other
            R = _r_of(stacked)
        step *= 2
    solution = solve_on_root(comm, lambda: _back_substitute(_with_prior(R, U), M))
    if rank == 0:
        _warn_condition(solution)
    return solution
