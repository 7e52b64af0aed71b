"""The QR least-squares solve against textbook formulas."""

import numpy as np
import pytest

from pargap.errors import PargapError
from pargap.parallel import SerialComm
from pargap.solve import cholesky_factor, serial_solve, tsqr_solve


def problem(rng, N=200, M=15):
    A = rng.normal(size=(N, M))
    b = rng.normal(size=N)
    B = rng.normal(size=(M, M))
    K_mm = B @ B.T + M * np.eye(M)
    return A, b, K_mm


def test_serial_solve_equals_regularised_normal_equations(rng):
    A, b, K_mm = problem(rng)
    sol = serial_solve(A, b, cholesky_factor(K_mm))
    expected = np.linalg.solve(K_mm + A.T @ A, A.T @ b)
    np.testing.assert_allclose(sol.alpha, expected, rtol=1e-10)
    residual = np.sqrt(np.sum((A @ sol.alpha - b) ** 2) + sol.alpha @ K_mm @ sol.alpha)
    assert sol.residual == pytest.approx(residual, rel=1e-10)
    assert 1 <= sol.condition < 1e3


def test_tsqr_on_one_rank_equals_serial(rng):
    A, b, K_mm = problem(rng)
    U = cholesky_factor(K_mm)
    np.testing.assert_allclose(tsqr_solve(SerialComm(), A, b, U).alpha, serial_solve(A, b, U).alpha, rtol=1e-12)


def test_fewer_rows_than_columns_still_solved_by_the_prior(rng):
    A, b, K_mm = problem(rng, N=4, M=15)
    sol = serial_solve(A, b, cholesky_factor(K_mm))
    np.testing.assert_allclose(sol.alpha, np.linalg.solve(K_mm + A.T @ A, A.T @ b), rtol=1e-10)


def test_not_positive_definite_gives_hint():
    with pytest.raises(PargapError, match="sparse_jitter"):
        cholesky_factor(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_ill_conditioned_warns_never_nan(rng):
    A = rng.normal(size=(50, 6))
    A[:, 5] = A[:, 4]  # two identical sparse points, held apart only by a tiny jitter
    with pytest.warns(RuntimeWarning, match="sparse_jitter"):
        sol = serial_solve(A, rng.normal(size=50), 1e-12 * np.eye(6))
    assert np.all(np.isfinite(sol.alpha))
