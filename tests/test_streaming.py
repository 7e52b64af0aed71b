"""Streamed rows (issue 14): the rows are built a block at a time and folded into the factor, so
memory does not grow with the data; the block size does not change the coefficients; a block too
small for one structure is a clear error; checkpoints hold the factor, restart on any number of
ranks, and a stop during the solve or the write leaves a usable checkpoint."""

import json
import subprocess
import sys

import ase.io
import h5py
import numpy as np
import pytest

from ase.calculators.lj import LennardJones

from conftest import LJ, lj_structures, run_job
from pargap.fitting.checkpoint import EXIT_STOPPED, TEST_SIGNAL_AFTER, TEST_SIGNAL_IN
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log
from pargap.settings.config import load_toml

TIMEOUT = 180
TWO_BODY = """
at_file = "{data}"
gp_file = "{folder}/out.h5"
e0 = 0.0
default_sigma = [0.01, 0.1, 0.1, 0.0]
sparse_jitter = 1e-8
rnd_seed = 5
[[gap]]
descriptor = "distance_2b"
cutoff = 4.0
cutoff_transition_width = 1.0
delta = 1.0
theta_uniform = 0.2
n_sparse = {n_sparse}
sparse_method = "uniform"
"""
SOAP = """
[[gap]]
descriptor = "soap"
cutoff = 4.0
cutoff_transition_width = 1.0
n_max = 4
l_max = 3
atom_sigma = 0.6
covariance_type = "dot_product"
zeta = 2
delta = 0.1
n_sparse = 40
sparse_method = "cur_points"
"""


def write_problem(folder, frames, n_sparse, soap=False):
    folder.mkdir(parents=True, exist_ok=True)
    ase.io.write(folder / "train.xyz", frames, format="extxyz")
    text = TWO_BODY.format(data=folder / "train.xyz", folder=folder, n_sparse=n_sparse) + (SOAP if soap else "")
    (folder / "fit.toml").write_text(text)
    return folder / "fit.toml"


def lj_cells(n, seed):
    """n rattled, strained 32-atom fcc Ar cells with smooth Lennard-Jones energy, forces and virial."""
    frames = []
    for atoms in lj_structures(n_bulk=n, n_cluster=0, seed=seed):
        big = atoms.repeat((2, 2, 2) if len(atoms) == 4 else (1, 2, 2))
        big.rattle(0.1, seed=len(frames))
        big.calc = LennardJones(**LJ)
        big.info = {"energy": big.get_potential_energy(),
                    "virial": -big.get_stress(voigt=False) * big.get_volume()}
        big.arrays["forces"] = big.get_forces()
        big.calc = None
        frames.append(big)
    return frames


def quiet_fit(path, *overrides):
    return fit(load_toml(path, list(overrides)), SerialComm(), Log(SerialComm(), quiet=True))


PEAK = """
import json, sys
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log, peak_memory_mb
from pargap.settings.config import load_toml
potential = fit(load_toml(sys.argv[1]), SerialComm(), Log(SerialComm(), quiet=True))
print(json.dumps({"peak_mb": peak_memory_mb(),
                  "rows": int(potential.provenance["n_rows"])}))
"""


def peak_of(path):
    run = run_job([sys.executable, "-c", PEAK, path], timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_four_times_the_data_peaks_within_15_percent_of_once(tmp_path):
    """One rank, the default row block (2048 rows, 9.4 MB here), M = 600: the rows of the data once
    take 30 MB, four times over 121 MB (held whole, as before streaming, the peak grew by 84 MB:
    294 -> 378 MB)."""
    once = write_problem(tmp_path / "once", lj_cells(64, seed=1), 600)
    four = write_problem(tmp_path / "four", lj_cells(256, seed=1), 600)
    small, large = peak_of(once), peak_of(four)
    assert large["rows"] > 3.5 * small["rows"]
    assert large["rows"] * 601 * 8 / 2**20 > 0.3 * small["peak_mb"]  # held whole, the rows would show (2x the margin)
    assert large["peak_mb"] < 1.15 * small["peak_mb"], (small, large)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """2b + SOAP, M = 240: about 2,500 rows, 5 MB, so 1 MB blocks make several rounds."""
    folder = tmp_path_factory.mktemp("stream")
    return write_problem(folder, lj_cells(24, seed=4) + lj_structures(n_bulk=0, n_cluster=6, seed=4), 200, soap=True)


def test_a_1mb_row_block_gives_the_same_potential_as_the_default(mixed):
    default = quiet_fit(mixed)
    small = quiet_fit(mixed, "row_block_mb = 1")
    M = sum(m.n_sparse for m in default.models)
    assert default.provenance["n_rows"] * (M + 1) * 8 > 3 * 2**20  # several blocks of 1 MB
    for a, b in zip(default.models, small.models):
        np.testing.assert_array_equal(a.sparse_x, b.sparse_x)
    assert_same_to_rounding(small.alpha, default.alpha, default.provenance["condition_estimate"])


def assert_same_to_rounding(alpha, reference, condition):
    """Equal up to the rounding a backward-stable QR allows: relative error ~ condition x eps
    (rows folded in other groupings round differently; a wrong or missing row changes alpha at O(1))."""
    error = np.max(np.abs(alpha - reference)) / np.max(np.abs(reference))
    assert error <= max(1e-12, 100 * np.finfo(float).eps * condition), (error, condition)


def test_a_block_too_small_for_one_structure_names_it_and_the_size_needed(mixed, tmp_path):
    run = run_job([sys.executable, "-m", "pargap.cli.fit", mixed, "--set", "row_block_mb = 0.05",
                   "--set", f"gp_file = '{tmp_path / 'x.h5'}'"], timeout=TIMEOUT)
    assert run.returncode == 1, run.stderr
    assert "row_block_mb" in run.stderr and "structure" in run.stderr and "at least" in run.stderr
    assert str(mixed.parent / "train.xyz") in run.stderr
    assert not (tmp_path / "x.h5").exists()


def alpha_of(path):
    with h5py.File(path, "r") as f:
        return np.concatenate([f["models"][k]["alpha"][()] for k in sorted(f["models"], key=int)])


def pargap_fit(ranks, *args, env=()):
    cmd = [sys.executable, "-m", "pargap.cli.fit", *map(str, args)]
    extra = [f"{k}={v}" for k, v in dict(env).items()]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", *[a for e in extra for a in ("-x", e)], *cmd]
        extra = []
    return run_job(["env", *extra, *cmd], timeout=TIMEOUT)


@pytest.mark.parametrize("phase", ["solve", "write"])
def test_sigterm_during_the_solve_or_the_write_ends_with_a_usable_checkpoint(mixed, tmp_path, phase):
    gp = tmp_path / "p.h5"
    run = pargap_fit(1, mixed, "--set", f"gp_file = '{gp}'", env={TEST_SIGNAL_IN: phase})
    ck = tmp_path / "p.h5.checkpoint"
    if phase == "solve":
        assert run.returncode == EXIT_STOPPED, run.stderr
        assert "during the solve" in run.stderr and not gp.exists()
    else:  # the potential is complete: nothing left to resume
        assert run.returncode == 0, run.stderr
        assert gp.exists()
        return
    with h5py.File(ck / "factor.h5", "r") as f:
        assert len(f["structures"]) == f.attrs["n_structures"]
    again = pargap_fit(2, mixed, "--restart", ck, "--set", f"gp_file = '{gp}'")
    assert again.returncode == 0, again.stderr
    reference = quiet_fit(mixed)
    assert_same_to_rounding(alpha_of(gp), reference.alpha, reference.provenance["condition_estimate"])


def test_an_unwritable_checkpoint_folder_is_an_error_before_any_work(mixed, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    run = pargap_fit(1, mixed, "--checkpoint", blocker / "ck", "--set", f"gp_file = '{tmp_path / 'q.h5'}'")
    assert run.returncode == 1
    assert "checkpoint folder" in run.stderr and "descriptors" not in run.stdout


def test_charge_models_are_in_the_checkpoint_and_a_restart_keeps_them(tmp_path, rng):
    """A fit with an energy and a charge model stopped mid-rows: its checkpoint holds the fitted
    charge models; the restart (on 2 ranks) takes them from there and both GPs equal the
    uninterrupted fit's."""
    from ase.calculators.emt import EMT

    from test_charges import SOAP as CHARGE_SOAP, fixed_charge_frames

    frames = fixed_charge_frames(rng, n=8)
    for a in frames:
        a.calc = EMT()
        a.info["energy"], a.arrays["forces"] = a.get_potential_energy(), a.get_forces()
        a.calc = None
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    (tmp_path / "fit.toml").write_text(
        f'at_file = "{tmp_path / "train.xyz"}"\ne0 = 0.0\ndefault_sigma = [0.01, 0.1, 0.1, 0.0]\nrnd_seed = 3\n'
        'sparse_jitter = 1e-6\n[[gap]]\ndescriptor = "distance_2b"\ncutoff = 3.0\ndelta = 1.0\ntheta_uniform = 0.5\n'
        'n_sparse = 10\nsparse_method = "uniform"\nadd_species = false\n' + CHARGE_SOAP
        + 'covariance_type = "dot_product"\nzeta = 2\ndelta = 0.5\nn_sparse = 4\nsparse_method = "random"\n')
    reference = quiet_fit(tmp_path / "fit.toml")
    gp, ck = tmp_path / "q.h5", tmp_path / "ck"
    run = pargap_fit(1, tmp_path / "fit.toml", "--checkpoint", ck, "--set", f"gp_file = '{gp}'",
                     env={TEST_SIGNAL_AFTER: "3"})
    assert run.returncode == EXIT_STOPPED, run.stderr
    with h5py.File(ck / "models.h5", "r") as f:
        saved = np.concatenate([f["charge_models"][k]["alpha"][()] for k in sorted(f["charge_models"], key=int)])
    charge_alpha = np.concatenate([m.alpha for m in reference.charge_models])
    np.testing.assert_allclose(saved, charge_alpha, rtol=1e-10, atol=1e-12 * np.max(np.abs(charge_alpha)))
    again = pargap_fit(2, tmp_path / "fit.toml", "--restart", ck, "--set", f"gp_file = '{gp}'")
    assert again.returncode == 0, again.stderr
    assert "charge observations" not in again.stdout  # not fitted again
    with h5py.File(gp, "r") as f:
        restarted = np.concatenate([f["charge_models"][k]["alpha"][()] for k in sorted(f["charge_models"], key=int)])
    np.testing.assert_array_equal(restarted, saved)
    assert_same_to_rounding(alpha_of(gp), reference.alpha, reference.provenance["condition_estimate"])


def test_soap_rows_over_chunks_of_centres_equal_the_whole_structure(monkeypatch):
    """SOAP's gradients are built a group of centres at a time (at most GRADIENT_CHUNK_BYTES each):
    energy, local-energy, force and virial rows summed over the groups equal those of all centres
    at once, and the groups cover every centre once."""
    from pargap.descriptors.soap import Soap
    from pargap.gp import observations
    from pargap.gp.kernels import make_kernel
    from pargap.gp.model import Model

    atoms = lj_cells(1, seed=2)[0]
    soap = Soap(cutoff=4.0, l_max=3, n_max=4, atom_sigma=0.6, cutoff_transition_width=1.0)
    x = soap.compute(atoms[:8]).x
    model = Model(soap, make_kernel("dot_product", dimension=soap.dimension, delta=0.1, zeta=2), x, np.ones(len(x)))
    whole = observations.single_model_rows(atoms, model)
    small = 3 * soap.dimension * 8 * 60  # a few centres' gradients per group
    chunks, _ = soap.centre_chunks(atoms, small)
    assert len(chunks) > 4 and np.array_equal(np.concatenate(chunks), np.arange(len(atoms)))
    assert soap.centre_chunks(atoms, 2**30)[0] == [None]  # a structure that fits: all centres at once
    monkeypatch.setattr(observations, "GRADIENT_CHUNK_BYTES", small)
    chunked = observations.single_model_rows(atoms, model)
    for name in ("energy", "local", "forces", "virial"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-12,
                                   atol=1e-12 * np.abs(getattr(whole, name)).max())


def test_descriptor_pool_gathered_in_chunks_equals_the_concatenation(monkeypatch):
    """A model's pool is gathered in chunks (held about once, not twice): the same values, weights
    and owners as the descriptors of every structure concatenated, whatever the chunk size."""
    from types import SimpleNamespace

    from pargap.descriptors import make_descriptor
    from pargap.descriptors.soap import Soap
    from pargap.fitting import models

    structures = [SimpleNamespace(index=3 * i + 1, atoms=a) for i, a in enumerate(lj_cells(6, seed=3))]
    for descriptor in (Soap(cutoff=4.0, l_max=3, n_max=4, atom_sigma=0.6), make_descriptor("distance_2b", cutoff=4.0)):
        every = [descriptor.compute(s.atoms) for s in structures]
        for chunk_bytes in (3000, 2**20):
            monkeypatch.setattr(models, "POOL_CHUNK_BYTES", chunk_bytes)
            pool = models.descriptor_pools(structures, [(descriptor, None, None, None)])[0]
            np.testing.assert_array_equal(pool.x, np.concatenate([d.x for d in every]))
            np.testing.assert_array_equal(pool.weight, np.concatenate([d.weight for d in every]))
            np.testing.assert_array_equal(pool.structure, np.concatenate(
                [np.full(len(d), s.index) for d, s in zip(every, structures)]))


def test_soap_counts_its_descriptors_without_computing_them():
    """SOAP's pool is written straight into one array sized by ``count``: one descriptor per atom of
    the centre species Z (every atom with Z = 0)."""
    from ase.build import bulk

    from pargap.descriptors.soap import Soap

    salt = bulk("NaCl", "rocksalt", a=5.64).repeat((2, 1, 1))
    salt.numbers[:3] = 11
    for Z in (0, 11, 17, 8):
        soap = Soap(cutoff=4.0, l_max=2, n_max=3, atom_sigma=0.6, Z=Z, n_species=2, species_Z=[11, 17])
        assert soap.count(salt) == len(soap.compute(salt)), Z
