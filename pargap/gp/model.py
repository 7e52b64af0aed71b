"""One sparse GP term of the energy: a descriptor, a kernel and M sparse points.

    eps(x) = sum_m alpha_m w(x) k(x, s_m) w_m

gap_fit calls this a *coordinate*; a fit sums several of them (after species expansion).
"""

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from pargap.errors import PargapError


@dataclass
class Model:
    """descriptor, kernel; sparse_x (M, D); sparse_weight (M,) cutoff weights w_m; alpha (M,) eV^-1
    scaled coefficients (None before the fit). ``gap_index`` is the position of the entry of the
    ``gap={...}`` string (or TOML ``[[gap]]`` list) this model was expanded from."""

    descriptor: object
    kernel: object
    sparse_x: np.ndarray
    sparse_weight: np.ndarray
    alpha: np.ndarray | None = None
    gap_index: int = 0

    @property
    def n_sparse(self):
        return len(self.sparse_x)

    def covariance_sparse(self, jitter):
        """K_MM = w_i k(s_i, s_j) w_j + jitter I, (M, M) (jitter added unscaled, as gap_fit)."""
        w = self.sparse_weight
        K = w[:, None] * self.kernel(self.sparse_x) * w[None, :]
        K[np.diag_indices_from(K)] += jitter
        return K


def cholesky_factor(K_mm):
    """Upper U (M, M) with K_MM = U^T U (the prior of the sparse GP, jitter already on the diagonal)."""
    try:
        return scipy.linalg.cholesky(K_mm, lower=False)
    except np.linalg.LinAlgError:
        raise PargapError(
            "K_MM is not positive definite: raise sparse_jitter (e.g. 1e-8) or use fewer, more "
            "distinct sparse points"
        ) from None
