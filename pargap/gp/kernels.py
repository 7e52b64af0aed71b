"""Covariance functions k(x, s) between descriptors, and their gradients with respect to x.

Kernels follow scikit-learn's habit: the constructor only stores arguments, ``k(X, Y)`` gives
the (n, m) covariance matrix. The derivative with respect to the descriptor (what force and
virial rows need) is ``gradient_terms``; prediction contracts it with the coefficients first
(``contraction``). Hyperparameter derivatives are not needed by the fit.
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

    def contraction(self, Y, beta):
        """x -> (sum_m beta_m k(x, s_m), sum_m beta_m grad_x k(x, s_m)) for sparse points Y (M, D),
        beta (M,): a function of X (n, D) and gradients (bool) returning ((n,), (n, D) or None).
        grad_x k = -delta^2 exp(...) (x - s) / theta^2, so the gradient is
        -(E beta) x / theta^2 + E (beta s) / theta^2 with E the (n, M) exponentials: O(M D) per x."""
        Y = np.asarray(Y, dtype=float)
        beta = np.asarray(beta, dtype=float)
        offset = self.f0**2 * beta.sum()
        inv = 1.0 / self.theta**2
        beta_Y = beta[:, None] * Y * inv

        def contract(X, gradients=True):
            E = self._exponential(X, Y)
            e = E @ beta
            if not gradients:
                return e + offset, None
            return e + offset, E @ beta_Y - e[:, None] * (X * inv)

        return contract


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

    def contraction(self, Y, beta):
        """As SquaredExponential.contraction, for k = delta^2 (x . s)^zeta:
        sum_m beta_m k = delta^2 sum_m beta_m (x . s_m)^zeta, gradient delta^2 zeta sum_m beta_m
        (x . s_m)^(zeta-1) s_m: O(M D) per x. For zeta = 2 and D < M the same sums are the quadratic
        form delta^2 x^T C x with C = sum_m beta_m s_m s_m^T (D, D), gradient 2 delta^2 C x: O(D^2)."""
        Y = np.asarray(Y, dtype=float)
        beta = np.asarray(beta, dtype=float)
        d2 = self.delta**2
        if self.zeta == 2 and Y.shape[1] < Y.shape[0]:
            C = (Y.T * beta) @ Y

            def quadratic(X, gradients=True):
                CX = X @ C
                return d2 * np.einsum("nd,nd->n", CX, X), (2.0 * d2 * CX if gradients else None)

            return quadratic
        beta_Y = beta[:, None] * Y

        def contract(X, gradients=True):
            dots = X @ Y.T
            P = self._power(dots, self.zeta - 1.0)
            e = d2 * ((P * dots) @ beta)
            return e, (d2 * self.zeta * (P @ beta_Y) if gradients else None)

        return contract


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
