"""pargap-fit --dry-run: the per-rank memory model against the peak measured (ru_maxrss) in a real
fit, in a fresh process, with a row block (all ~100 MB of rows in one) and triangles large enough
that the data, not the baseline, decide the result."""

import re
import sys

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import run_job
from pargap.fitting.memory import BASE_MB, NUMBA_MB, memory_request, sample_indices

FIT = """
at_file = "{data}"
gp_file = "{gp}"
e0 = 0.0
default_sigma = [0.1, 1.0, 1.0, 0.0]
sparse_jitter = 1e-6
rnd_seed = 1
row_block_mb = 200
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
delta = 1.0
theta_uniform = 0.5
n_sparse = 1500
sparse_method = "uniform"
[[gap]]
descriptor = "soap"
cutoff = 4.0
n_max = 4
l_max = 3
atom_sigma = 0.6
covariance_type = "dot_product"
zeta = 2
delta = 0.1
n_sparse = 100
sparse_method = "cur_points"
"""


def cells(n, seed=0):
    """Rattled 16- and 32-atom Ar cells with arbitrary labels (memory does not depend on them)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Ar", "fcc", a=5.3 * rng.uniform(0.98, 1.04), cubic=True).repeat((2, 2, 2) if k % 3 else (2, 2, 1))
        atoms.rattle(0.15, seed=k)
        atoms.calc = SinglePointCalculator(atoms, energy=rng.normal(), forces=rng.normal(0, 0.1, (len(atoms), 3)))
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    ase.io.write(folder / "train.xyz", cells(100), format="extxyz")
    (folder / "fit.toml").write_text(FIT.format(data=folder / "train.xyz", gp=folder / "gap.h5"))
    return folder


def _fit(*args):
    return run_job([sys.executable, "-m", "pargap.cli.fit", *args], timeout=120)


def test_dry_run_estimate_is_within_20_percent_of_the_measured_peak(job):
    plan = _fit(job / "fit.toml", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert not (job / "gap.h5").exists()  # no fit
    assert "rank" in plan.stdout and "cov. rows" in plan.stdout
    estimated = float(re.search(r"largest estimated peak per rank: (\d+) MB", plan.stdout).group(1))
    rows = int(re.search(r"(\d+) rows x 1600 sparse points", plan.stdout).group(1))
    assert rows == 100 + 3 * sum(16 if k % 3 == 0 else 32 for k in range(100))  # energies, forces

    fit = _fit(job / "fit.toml")
    assert fit.returncode == 0, fit.stderr
    measured = float(re.search(r"peak memory per rank: measured max ([0-9.]+) MB", fit.stdout).group(1))
    assert measured > 2 * (BASE_MB + NUMBA_MB)  # premise: the data, not the baseline, dominate the peak
    print(f"estimated {estimated} MB, measured {measured} MB")
    assert abs(estimated / measured - 1) < 0.20, (estimated, measured)
    ratio = float(re.search(r"measured/estimated ([0-9.]+)", fit.stdout).group(1))
    assert abs(ratio - measured / estimated) < 0.02  # the end-of-fit report uses the same model


def test_dry_run_plans_for_other_rank_counts(job):
    plan = _fit(job / "fit.toml", "--dry-run", "--ranks", "3")
    assert plan.returncode == 0, plan.stderr
    table = [line.split() for line in plan.stdout.splitlines() if re.match(r"\s+\d+\s+\d+\s+\d+", line)]
    assert [int(t[0]) for t in table] == [0, 1, 2]
    assert sum(int(t[1]) for t in table) == 100
    rows = [int(t[2]) for t in table]
    assert max(rows) / np.mean(rows) < 1.1  # the cost partition, as the fit does it
    peaks = [float(t[-1]) for t in table]
    assert peaks[0] > peaks[2]  # rank 0 holds the prior factor and merges triangles


def test_sample_takes_the_largest_and_a_spread():
    n_atoms = list(range(1, 1001))
    which = sample_indices(n_atoms, 40)
    assert 999 in which and 0 in which and len(which) <= 40
    assert sample_indices([5] * 10, 40) == list(range(10))


def test_memory_request_has_a_margin():
    assert memory_request(1000) == "1200M"
    assert memory_request(1001) == "1300M"


def _table(text):
    return [line.split() for line in text.splitlines() if re.match(r"\s+\d+\s+\d+\s+\d+", line)]


def test_dry_run_under_mpirun_plans_for_its_ranks(job):
    """Under mpirun the plan is for the launcher's P, printed once (rank 0), as --ranks P on one process."""
    mpi = run_job(["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "pargap.cli.fit",
                   job / "fit.toml", "--dry-run"], timeout=120)
    assert mpi.returncode == 0, mpi.stderr
    assert mpi.stdout.count("dry run:") == 1
    one = _fit(job / "fit.toml", "--dry-run", "--ranks", "2")
    assert _table(mpi.stdout) == _table(one.stdout) and len(_table(one.stdout)) == 2


def test_the_solve_column_follows_the_solver():
    """At M = 5e4 on 256 ranks of ~2400 rows, TSQR's triangles (tens of GB on rank 0) dominate; the
    ScaLAPACK plan holds its share of the factor, O(M^2 / P) per rank; the rows are streamed, so
    the row phase holds one block (64 MB here), not the rank's ~930 MB of rows; auto picks by the
    memory budget."""
    from pargap.fitting.memory import DataSizes, plan, planned_solver
    from pargap.linalg.factor import factor_bytes

    P, M = 256, 50_000
    n = 4 * P
    sizes = DataSizes(n_atoms=np.full(n, 64.0), n_rows=np.full(n, 610.0), cost=np.full(n, 1.0),
                      desc=np.full((1, n), 64.0), grad=np.full((1, n), 2000.0), dims=[253], n_sparse=[M],
                      has_soap=True, sampled=10, names=["soap"])
    rows_mb = 4 * 610 * (M + 1) * 8 / 2**20
    tsqr = plan(sizes, P, "tsqr", row_block_mb=64)[1]
    scalapack = plan(sizes, P, "scalapack", row_block_mb=64)[1]
    assert tsqr[0]["solve"] > 3 * (M + 1) ** 2 * 8 / 2**20  # rank 0 holds the triangles
    whole = plan(sizes, P, "scalapack", row_block_mb=10**6)[1]  # one block holding all the rank's rows
    share = factor_bytes("scalapack", M + 1, P) / 2**20
    for e, w in zip(scalapack, whole):
        assert share < e["solve"] - BASE_MB < share + 400
        # a block (at least one structure's 610 rows) and its share of the panel, not 2 x the rank's rows
        assert w["covariance rows"] - e["covariance rows"] == pytest.approx(2 * rows_mb * (1 - 1 / 4))
    assert planned_solver(sizes, "auto", memory_per_rank=2 * 2**30) == "scalapack"
    small = DataSizes(**{**sizes.__dict__, "n_sparse": [500]})
    assert planned_solver(small, "auto", memory_per_rank=2 * 2**30) == "tsqr"
