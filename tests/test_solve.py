"""The QR least-squares solve against textbook formulas."""

import numpy as np
import pytest

from pargap.errors import PargapError
from pargap.gp.model import cholesky_factor
from pargap.linalg.solve import serial_solve, tsqr_solve
from pargap.parallel import SerialComm


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


def test_covariance_tiles_assemble_the_block_diagonal_K_mm(rng):
    """Tiles at scattered global indices equal the same entries of the block-diagonal K_MM of
    several models (each Model.covariance_sparse, jitter included), zero between models."""
    import scipy.linalg

    from conftest import random_model
    from pargap.linalg.solve import covariance_sparse_tile

    models = [random_model(rng, M=M, theta=0.3 + 0.1 * k) for k, M in enumerate((7, 4, 9))]
    K_mm = scipy.linalg.block_diag(*[m.covariance_sparse(1e-3) for m in models])
    rows = np.sort(rng.choice(20, 11, replace=False))
    cols = np.sort(rng.choice(20, 13, replace=False))
    np.testing.assert_allclose(covariance_sparse_tile(models, 1e-3, rows, cols), K_mm[np.ix_(rows, cols)],
                               rtol=1e-13, atol=1e-15)
    everything = np.arange(20)
    np.testing.assert_allclose(covariance_sparse_tile(models, 1e-3, everything, everything), K_mm, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("n", [1, 6, 40])
def test_lanczos_finds_the_largest_eigenvalue(rng, n):
    from pargap.linalg.solution import largest_eigenvalue

    B = rng.normal(size=(n + 3, n)) @ np.diag(np.logspace(0, 3, n))
    expected = np.linalg.norm(B, 2) ** 2
    assert largest_eigenvalue(lambda x: B.T @ (B @ x), n, SerialComm()) == pytest.approx(expected, rel=1e-10)


def test_auto_picks_tsqr_when_its_triangles_fit_else_scalapack(monkeypatch):
    from pargap.linalg.solve import choose_solver

    from pargap.linalg.factor import factor_bytes

    need = factor_bytes("tsqr", 3001, 1) / 2**20  # TSQR at M = 3000: about 2.5 x 8 x 3001^2 + 32 MiB
    assert 200 < need < 220
    monkeypatch.setenv("PARGAP_MEMORY_PER_RANK", "1G")
    assert choose_solver(SerialComm(), 3000)[0] == "tsqr"
    monkeypatch.setenv("PARGAP_MEMORY_PER_RANK", "400M")  # more than half of 400 MiB
    solver, reason = choose_solver(SerialComm(), 3000)
    assert solver == "scalapack" and f"{need:.1f} MiB" in reason and "400.0 MiB" in reason
    assert choose_solver(SerialComm(), 3000, "serial") == ("serial", "as set (solver)")
    monkeypatch.setenv("PARGAP_MEMORY_PER_RANK", "lots")
    with pytest.raises(PargapError, match="PARGAP_MEMORY_PER_RANK"):
        choose_solver(SerialComm(), 3000)


def test_memory_per_rank_reads_meminfo(monkeypatch):
    from pargap.linalg.solve import memory_per_rank, parse_bytes

    monkeypatch.delenv("PARGAP_MEMORY_PER_RANK", raising=False)
    assert 0 < memory_per_rank(SerialComm()) < 2**50
    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("8e9") == 8e9 and parse_bytes("1.5kb") == 1536


def test_settings_accept_the_scalapack_solver():
    from pargap.errors import ConfigError
    from pargap.settings.config import FitSettings

    with pytest.raises(ConfigError, match="auto, tsqr, scalapack, serial"):
        FitSettings(at_file="x.xyz", gap=(object(),), default_sigma=(0.1, 1, 1, 0), solver="lapack")
    settings = FitSettings(at_file="x.xyz", gap=(object(),), default_sigma=(0.1, 1, 1, 0), solver="scalapack")
    assert settings.solver == "scalapack"


@pytest.mark.parametrize("exact_up_to", [0, 1000])
def test_condition_is_that_of_the_equilibrated_factor(rng, exact_up_to):
    """Lanczos (forced by exact_up_to = 0) and the SVD give the 2-norm condition number of R D^-1,
    D = diag of R's column norms: a column scaled by 10^6 (a model's delta) does not change it."""
    from pargap.linalg.solution import equilibrated_condition

    R = np.asfortranarray(np.triu(rng.normal(size=(61, 61))) / 60 + np.diag(np.logspace(-2, 1, 61)))
    R[60, 60] = 1.0  # the corner of the augmented triangle
    expected = np.linalg.cond(R[:60, :60] / np.linalg.norm(R[:60, :60], axis=0))
    assert equilibrated_condition(R, exact_up_to=exact_up_to) == pytest.approx(expected, rel=1e-8)
    R[:, 7] *= 1e6
    assert equilibrated_condition(R, exact_up_to=exact_up_to) == pytest.approx(expected, rel=1e-8)


def test_store_covariance_is_refused_with_the_scalapack_solver():
    from pargap.errors import ConfigError
    from pargap.settings.config import FitSettings

    with pytest.raises(ConfigError, match="store_covariance = true needs the R factor on one rank"):
        FitSettings(at_file="x.xyz", gap=(object(),), default_sigma=(0.1, 1, 1, 0), solver="scalapack",
                    store_covariance=True)
