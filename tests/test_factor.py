"""The streamed QR factor: triangle folds and merges against LAPACK's QR of the stacked rows, packed
triangles, then under real mpirun the distributed factor against lstsq on the gathered problem
for P = 1..16 (uneven and empty row blocks, blocks of 1, 5 and 64 rows, a checkpoint restored on
fewer ranks) and ScaLAPACK on a 2 x 2 grid against TSQR at M = 2000. Every mpirun has a timeout."""

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from conftest import run_job
from pargap.linalg import tsqr
from pargap.linalg.factor import RowFactor, factor_bytes
from pargap.parallel import SerialComm

HERE = Path(__file__).resolve().parent


def gram(R):
    """R^T R: the same for every R factor of the same rows, whatever the signs of R's rows."""
    return R.T @ R


@pytest.mark.parametrize("block", [1, 3, 17, 200])
def test_folds_of_any_block_size_give_the_rows_triangle(rng, block):
    rows = rng.normal(size=(157, 12))
    R = tsqr.empty_triangle(12)
    for start in range(0, len(rows), block):
        tsqr.fold(R, rows[start:start + block].copy(order="F"))
    assert np.array_equal(R, np.triu(R))
    np.testing.assert_allclose(gram(R), rows.T @ rows, rtol=1e-12, atol=1e-12)


def test_fold_of_no_rows_changes_nothing(rng):
    R = np.asfortranarray(np.triu(rng.normal(size=(6, 6))))
    before = R.copy()
    tsqr.fold(R, np.zeros((0, 6)))
    assert np.array_equal(R, before)


def test_merge_and_trapezoid_fold_equal_the_qr_of_the_stack(rng):
    R = np.asfortranarray(np.triu(rng.normal(size=(9, 9))))
    S = np.asfortranarray(np.triu(rng.normal(size=(9, 9))))
    T = np.asfortranarray(np.triu(rng.normal(size=(8, 9))))  # upper trapezoidal, like [U | 0]
    expected = gram(R) + gram(S) + T.T @ T
    tsqr.merge(R, S)
    tsqr.fold_trapezoid(R, T)
    np.testing.assert_allclose(gram(R), expected, rtol=1e-12)
    assert np.array_equal(R, np.triu(R))


class Wire:
    """A point-to-point stand-in that keeps the messages (one process sends, then receives)."""

    def __init__(self):
        self.messages = []

    def Send(self, buffer, dest, tag):
        self.messages.append(buffer.copy())

    def Recv(self, buffer, source, tag):
        buffer[...] = self.messages.pop(0)


@pytest.mark.parametrize("n, chunk", [(1, 5), (40, 7), (40, 1000), (301, 4096)])
def test_packed_triangle_crosses_in_chunks_unchanged(rng, n, chunk):
    """Only the upper triangle travels (n (n+1) / 2 entries), in messages of at most ``chunk``
    entries (a column longer than the chunk goes alone)."""
    R = np.asfortranarray(np.triu(rng.normal(size=(n, n))))
    wire = Wire()
    tsqr.send_triangle(wire, R, 0, 0, chunk=chunk)
    assert sum(len(m) for m in wire.messages) == n * (n + 1) // 2
    assert all(len(m) <= max(chunk, n) for m in wire.messages)
    S = np.zeros((n, n), order="F")
    tsqr.receive_triangle(wire, S, 0, 0, chunk=chunk)
    assert np.array_equal(S, R) and not wire.messages


def test_solve_keeps_the_data_factor_for_more_rows_and_checkpoints(rng):
    """A solve folds the prior into a copy: rows folded after it count, the checkpoint holds the
    rows' triangle only, and the result equals the regularised normal equations."""
    A, b = rng.normal(size=(80, 10)), rng.normal(size=80)
    K_mm = np.eye(10) * 2.0
    factor = RowFactor.create(SerialComm(), 11, "tsqr")
    factor.fold(np.column_stack([A[:50], b[:50]]))
    factor.solve(lambda r, c: K_mm[np.ix_(r, c)])
    factor.fold(np.column_stack([A[50:], b[50:]]))
    state = factor.checkpoint_state()
    assert (state.offset, state.n_rows) == (0, 11)
    Ab = np.column_stack([A, b])
    np.testing.assert_allclose(gram(state.rows), Ab.T @ Ab, rtol=1e-12)
    alpha = factor.solve(scipy.linalg.cholesky(K_mm)).alpha  # U itself, as the old entry points pass it
    np.testing.assert_allclose(alpha, np.linalg.solve(K_mm + A.T @ A, A.T @ b), rtol=1e-10)


def test_prior_tiles_and_U_give_the_same_solution(rng):
    A, b = rng.normal(size=(40, 700)), rng.normal(size=40)  # wider than a K_MM panel
    B = rng.normal(size=(700, 700))
    K_mm = B @ B.T / 700 + np.eye(700)
    solutions = []
    for prior in (lambda r, c: K_mm[np.ix_(r, c)], scipy.linalg.cholesky(K_mm)):
        factor = RowFactor.create(SerialComm(), 701, "tsqr")
        factor.fold(np.column_stack([A, b]))
        solutions.append(factor.solve(prior))
    np.testing.assert_allclose(solutions[0].alpha, solutions[1].alpha, rtol=1e-10)
    np.testing.assert_allclose(solutions[0].factor.T @ solutions[0].factor, K_mm + A.T @ A, rtol=1e-10, atol=1e-10)


def test_condition_does_not_see_the_models_deltas(rng):
    """Two models whose deltas differ by 10^6 (K_NM columns and K_MM blocks scaled by delta^2):
    the raw condition number passes the warning threshold, the equilibrated one is that of equal
    deltas, and no warning is raised."""
    import warnings

    A, b = rng.normal(size=(60, 8)), rng.normal(size=60)
    B = rng.normal(size=(8, 8))
    K_mm = B @ B.T / 8 + np.eye(8)
    K_mm[:4, 4:] = K_mm[4:, :4] = 0.0  # block diagonal: two models
    scale = np.repeat([1.0, 1e12], 4)  # delta^2
    solutions = []
    for s in (np.ones(8), scale):
        factor = RowFactor.create(SerialComm(), 9, "tsqr")
        factor.fold(np.column_stack([A * s, b]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            solutions.append(factor.solve(lambda r, c: (s[:, None] * K_mm * s[None, :])[np.ix_(r, c)]))
    assert np.linalg.cond(solutions[1].factor) > 1e12
    assert solutions[1].condition == pytest.approx(solutions[0].condition, rel=1e-6)
    np.testing.assert_allclose(solutions[1].alpha * scale, solutions[0].alpha, rtol=1e-6)


def test_not_positive_definite_prior_gives_the_hint(rng):
    from pargap.errors import PargapError

    factor = RowFactor.create(SerialComm(), 4, "tsqr")
    factor.fold(rng.normal(size=(10, 4)))
    with pytest.raises(PargapError, match="sparse_jitter"):
        factor.solve(lambda r, c: -np.eye(3)[np.ix_(r, c)])


def test_factor_memory_is_three_triangles_and_a_message_on_tsqr_a_share_on_scalapack():
    """At the solve rank 0 holds R (its upper part resident), a dense copy and the prior rows."""
    n = 5001
    assert 2.5 * 8 * n * n < factor_bytes("tsqr", n, 1) < 2.5 * 8 * n * n + 64 * 2**20
    assert factor_bytes("scalapack", n, 16) < factor_bytes("tsqr", n, 16) / 4


def test_a_folded_triangle_keeps_only_its_upper_half_resident(rng):
    """The memory plan counts a folded triangle as its upper part and tpqrt's panels: measured in
    this process's resident memory (VmRSS) after folding 3,000 rows into an empty 3,001 x 3,001
    triangle (a dense one would be 72 MB)."""
    def rss():
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmRSS:")[1].split()[0]) * 1024

    n = 3001
    rows = np.asfortranarray(rng.normal(size=(n - 1, n)))
    before = rss()
    R = tsqr.empty_triangle(n)
    tsqr.fold(R, rows)
    grown = rss() - before
    full = 8.0 * n * n
    assert np.count_nonzero(np.abs(np.diag(R)) > 1e-6) == n - 1  # the fold happened
    planned = tsqr.triangle_resident_bytes(n) + 2 * tsqr.PANEL * n * 8  # as pargap.fitting.memory.fold_bytes
    assert abs(grown / planned - 1) < 0.15 and grown < 0.75 * full, (grown, planned, full)


def mpirun(n, *args, timeout=180):
    return run_job(["mpirun", "-n", str(n), "--oversubscribe", sys.executable, *args], timeout=timeout)


@pytest.mark.parametrize("solver, ranks", [("tsqr", 1), ("tsqr", 2), ("tsqr", 3), ("tsqr", 4), ("tsqr", 8),
                                           ("tsqr", 16), ("serial", 3), ("scalapack", 1), ("scalapack", 2),
                                           ("scalapack", 6)])
def test_distributed_factor_equals_lstsq(solver, ranks):
    run = mpirun(ranks, HERE / "mpi" / "factor_oracle.py", solver, 50)  # packed triangles cut in 50s
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAILED" not in run.stdout
    for check in ("block 5: alpha equals lstsq", "block 64: same alpha on every rank",
                  "block 1: condition equals one process's", "a second solve gives the same alpha",
                  "rows folded after a solve and a checkpoint count", "the rest folded there: alpha equals lstsq"):
        assert check in run.stdout, run.stdout


def test_scalapack_on_a_2x2_grid_equals_tsqr_at_M_2000():
    run = mpirun(4, HERE / "mpi" / "factor_large.py", 2000, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "grid 2 x 2" in run.stdout and "ok" in run.stdout, run.stdout
