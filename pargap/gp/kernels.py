"""Covariance functions k(x, s) between descriptors, and their gradients with respect to x.

Kernels follow scikit-learn's habit: the constructor only stores arguments, ``k(X, Y)`` gives
the (n, m) covariance matrix. The derivative with respect to the descriptor (what force and
virial rows need) is ``gradient_terms``; hyperparameter derivatives are not needed by the fit.
"""

import numpy as np

from pargap.errors import ConfigError


class SquaredExponential:
    """gap_fit's ``ard_se``: k(x, s) = delta^2 exp(-1/2 sum_d (x_d - s_d)^2 / theta_d^2) + f0^2.

    delta: energy scale (eV). theta: length scales, one per descriptor dimension (or one value
    for all), in the descriptor's units. f0: constant offset (eV), gap_fit default 0.
    """

    name = "ard_se"

    def __init__(self, *, delta, theta, f0=0.0):
        self.delta = float(delta)
        self.theta = np.atleast_1d(np.asarray(theta, dtype=float))
        self.f0 = float(f0)
        if np.any(self.theta <= 0):
            raise ConfigError(f"ard_se: theta must be positive, got {self.theta}")

    def params(self):
        return {"delta": self.delta, "theta": self.theta, "f0": self.f0}

    def _exponential(self, X, Y):
        """delta^2 exp(-|x - s|^2_theta / 2), (n, m)."""
        Xs = X / self.theta
        Ys = Y / self.theta
        sq = (Xs**2).sum(1)[:, None] + (Ys**2).sum(1)[None, :] - 2.0 * Xs @ Ys.T
        np.maximum(sq, 0.0, out=sq)
        return self.delta**2 * np.exp(-0.5 * sq)

    def __call__(self, X, Y=None):
        """Covariance matrix k(X_i, Y_j): X (n, D), Y (m, D) -> (n, m), eV^2 units of delta^2."""
        Y = X if Y is None else Y
        return self._exponential(X, Y) + self.f0**2

    def diag(self, X):
        return np.full(len(X), self.delta**2 + self.f0**2)

    def gradient_terms(self, X, Y, K=None):
        """grad_x k(x_i, s_m) . dX = A_im (g dX) . s_m + B_im (g dX) . x_i with metric g = 1/theta^2:
        grad_x k = -delta^2 exp(...) (x - s) / theta^2, so A = delta^2 exp(...) and B = -A.
        Returns (g (D,), A (n, m), B (n, m))."""
        E = self._exponential(X, Y) if K is None else K - self.f0**2
        return 1.0 / self.theta**2, E, -E


class DotProduct:
    """gap_fit's ``dot_product`` (SOAP): k(x, s) = delta^2 (x . s)^zeta. No f0, no normalisation:
    SOAP vectors are already of unit length. delta: energy scale (eV); zeta: positive exponent."""

    name = "dot_product"

    def __init__(self, *, delta, zeta):
        self.delta = float(delta)
        self.zeta = float(zeta)
        if not self.zeta > 0:
            raise ConfigError(f"dot_product: zeta must be positive, got {zeta}")

    def params(self):
        return {"delta": self.delta, "zeta": self.zeta}

    def _power(self, dots, exponent):
        if exponent == 0:
            return np.ones_like(dots)
        if float(exponent).is_integer():
            return dots ** int(exponent)  # integer power, as gap_fit (defined for negative dots)
        return np.power(dots, exponent)

    def __call__(self, X, Y=None):
        Y = X if Y is None else Y
        return self.delta**2 * self._power(X @ Y.T, self.zeta)

    def diag(self, X):
        return self.delta**2 * self._power(np.einsum("nd,nd->n", X, X), self.zeta)

    def gradient_terms(self, X, Y, K=None):
        """grad_x k(x_i, s_m) . dX = A_im dX . s_m with A = delta^2 zeta (x . s)^(zeta-1); no metric,
        no B term. Returns (None, A (n, m), None)."""
        return None, self.delta**2 * self.zeta * self._power(X @ Y.T, self.zeta - 1.0), None


KERNELS = {"ard_se": SquaredExponential, "dot_product": DotProduct}


def gradient_dot(kernel, X, Y, dX, owner, K=None):
    """Directional derivatives (grad_x k)(X[owner_g], Y_m) . dX_g[c], shape (G, C, m), from the
    kernel's ``gradient_terms`` (X: (n, D), Y: (m, D), dX: (G, C, D), owner: (G,)). A reference
    for tests; the fit contracts the same terms without forming this array (observations.py)."""
    metric, A, B = kernel.gradient_terms(X, Y, K)
    gdX = dX if metric is None else dX * metric
    out = A[owner][:, None, :] * (gdX @ Y.T)
    if B is not None:
        out += B[owner][:, None, :] * np.einsum("gcd,gd->gc", gdX, X[owner])[:, :, None]
    return out


def make_kernel(name, *, dimension, delta, theta_uniform=None, theta=None, f0=0.0, zeta=None, **extra):
    """Build a kernel from gap_fit-style settings (``covariance_type``, ``delta``, ``theta_uniform``, ``zeta``)."""
    if extra:
        raise ConfigError(f"kernel '{name}': unsupported settings {sorted(extra)}")
    if name == "dot_product":
        if zeta is None:
            raise ConfigError("dot_product kernel: zeta is required")
        if f0:
            raise ConfigError("dot_product kernel: f0 is not supported (gap_fit ignores it too)")
        return DotProduct(delta=delta, zeta=zeta)
    if name == "ard_se":
        if (theta_uniform is None) == (theta is None):
            raise ConfigError("ard_se kernel: give exactly one of theta_uniform or theta")
        th = np.full(dimension, float(theta_uniform)) if theta is None else np.asarray(theta, float)
        if th.shape != (dimension,):
            raise ConfigError(f"ard_se kernel: theta needs {dimension} values, got {th.size}")
        return SquaredExponential(delta=delta, theta=th, f0=f0)
    raise ConfigError(f"unknown covariance_type '{name}'; supported: {', '.join(KERNELS)}")
