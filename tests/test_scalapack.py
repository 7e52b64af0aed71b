"""The 2-D block-cyclic ScaLAPACK solver: layout helpers without MPI, then under real mpirun the
solve against the serial reference (uneven and empty row blocks, M not a multiple of the block
size, condition estimate, ill-conditioned and not positive definite input) and a whole fit
against TSQR. Every mpirun has a timeout."""

import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from conftest import lj_structures, run_job

HERE = Path(__file__).resolve().parent
TIMEOUT = 120


def mpirun(n, *args, timeout=TIMEOUT):
    return run_job(["mpirun", "-n", str(n), "--oversubscribe", sys.executable, *args], timeout=timeout)


@pytest.mark.parametrize("size, shape", [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (2, 2)), (6, (3, 2)),
                                         (7, (7, 1)), (16, (4, 4))])
def test_grid_is_near_square_and_tall(size, shape):
    from pargap.linalg.scalapack import grid_shape

    assert grid_shape(size) == shape


@pytest.mark.parametrize("n, nb, nprocs", [(23, 8, 1), (23, 8, 2), (23, 8, 3), (100, 7, 4), (5, 64, 3)])
def test_block_cyclic_indices_cover_every_row_once(n, nb, nprocs):
    """numroc (ScaLAPACK's count) and local_to_global (ours) agree: the processes' global indices
    partition 0..n-1, in blocks of nb dealt round-robin."""
    from pargap.linalg.scalapack import local_to_global, numroc

    owned = [local_to_global(numroc(n, nb, p, nprocs), nb, p, nprocs) for p in range(nprocs)]
    np.testing.assert_array_equal(np.sort(np.concatenate(owned)), np.arange(n))
    for p, g in enumerate(owned):
        assert np.all(g // nb % nprocs == p)


@pytest.mark.parametrize("ranks, block_size", [(1, 8), (2, 8), (3, 8), (4, 8), (4, 64)])
def test_scalapack_equals_serial_reference(ranks, block_size):
    run = mpirun(ranks, HERE / "mpi" / "scalapack_oracle.py", block_size)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAILED" not in run.stdout
    for check in ("alpha equals serial", "condition equals serial", "ill-conditioned warns",
                  "ill-conditioned finite", "not positive definite raises the hint"):
        assert f"ranks {ranks}: {check}" in run.stdout, run.stdout


@pytest.fixture(scope="module")
def fit_toml(tmp_path_factory):
    """LJ data with energies, forces and virials; three summed terms (two pair terms and SOAP), so
    K_MM is block diagonal with blocks of 9, 7 and 8 points."""
    folder = tmp_path_factory.mktemp("scalapack")
    ase.io.write(folder / "train.xyz", lj_structures(n_bulk=5, n_cluster=4, seed=3), format="extxyz")
    (folder / "fit.toml").write_text(f"""
at_file = "{folder / 'train.xyz'}"
e0 = 0.0
default_sigma = [0.1, 1.0, 1.0, 0.0]
sparse_jitter = 1e-4
rnd_seed = 5
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.5
delta = 1.0
theta_uniform = 0.25
n_sparse = 9
sparse_method = "uniform"
[[gap]]
descriptor = "distance_2b"
cutoff = 3.0
delta = 0.3
theta_uniform = 0.2
n_sparse = 7
sparse_method = "random"
[[gap]]
descriptor = "soap"
cutoff = 4.0
cutoff_transition_width = 1.0
n_max = 3
l_max = 2
atom_sigma = 0.6
covariance_type = "dot_product"
zeta = 2
delta = 0.1
n_sparse = 8
sparse_method = "cur_points"
""")
    return folder / "fit.toml"


@pytest.mark.parametrize("ranks", [1, 3])
def test_fit_with_scalapack_equals_tsqr(fit_toml, ranks):
    run = mpirun(ranks, HERE / "mpi" / "scalapack_fit.py", fit_toml)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"ranks {ranks}: M 24, alpha relative difference" in run.stdout
