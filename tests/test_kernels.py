"""Kernels: symmetry, K(X) = K(X, X), diagonal, gradients against finite differences."""

import numpy as np

import pytest

from pargap.gp.kernels import DotProduct, SquaredExponential, gradient_dot, make_kernel

KERNELS = {
    "ard_se": SquaredExponential(delta=1.3, theta=[0.7, 1.1, 0.9], f0=0.2),
    "dot_product_int": DotProduct(delta=1.5, zeta=4),
    "dot_product_real": DotProduct(delta=0.7, zeta=2.5),
}


def test_square_exponential_values(rng):
    X = rng.normal(size=(5, 3))
    k = SquaredExponential(delta=1.7, theta=[0.5, 1.0, 2.0], f0=0.3)
    K = k(X)
    np.testing.assert_allclose(K, k(X, X))
    np.testing.assert_allclose(K, K.T)
    np.testing.assert_allclose(np.diag(K), k.diag(X))
    d2 = (((X[1] - X[3]) / k.theta) ** 2).sum()
    np.testing.assert_allclose(K[1, 3], 1.7**2 * np.exp(-0.5 * d2) + 0.3**2, rtol=1e-14)
    assert np.all(np.linalg.eigvalsh(k(X)) > 0)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_matrix_properties(name, rng):
    k = KERNELS[name]
    X = np.abs(rng.normal(size=(5, 3)))  # positive: SOAP vectors have non-negative dot products
    np.testing.assert_allclose(k(X), k(X, X))
    np.testing.assert_allclose(k(X), k(X).T)
    np.testing.assert_allclose(np.diag(k(X)), k.diag(X))


def test_dot_product_values(rng):
    X, Y = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    np.testing.assert_allclose(DotProduct(delta=2.0, zeta=3)(X, Y), 4.0 * (X @ Y.T) ** 3)


@pytest.mark.parametrize("name", KERNELS)
def test_gradient_dot_matches_finite_differences(name, rng):
    X = np.abs(rng.normal(size=(4, 3)))
    Y = np.abs(rng.normal(size=(6, 3)))
    k = KERNELS[name]
    owner = np.array([0, 2, 2, 3, 1])
    dX = rng.normal(size=(5, 3, 3))
    g = gradient_dot(k, X, Y, dX, owner)
    h = 1e-6
    for row, o in enumerate(owner):
        for c in range(3):
            xp = X[o] + h * dX[row, c]
            xm = X[o] - h * dX[row, c]
            num = (k(xp[None], Y) - k(xm[None], Y))[0] / (2 * h)
            np.testing.assert_allclose(g[row, c], num, rtol=1e-6, atol=1e-9)


def test_make_kernel_theta_uniform_and_errors():
    k = make_kernel("ard_se", dimension=3, delta=2.0, theta_uniform=0.5)
    np.testing.assert_array_equal(k.theta, [0.5, 0.5, 0.5])
    import pytest

    from pargap.errors import ConfigError

    with pytest.raises(ConfigError, match="covariance_type"):
        make_kernel("matern", dimension=1, delta=1.0, theta_uniform=1.0)
