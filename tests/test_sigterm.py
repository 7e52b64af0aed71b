"""SIGTERM during a fit: the ranks agree at a safe point, save the models and the rows done so
far with the structures they cover, and exit 75; --restart builds only the missing rows and gives
the uninterrupted fit's coefficients (to 1e-10), on any number of ranks."""

import os
import signal
import subprocess
import sys
import time

import ase.io
import h5py
import numpy as np
import pytest

from conftest import _kill_job, _session_members, lj_structures, run_job
from pargap.fitting.checkpoint import EXIT_STOPPED, TEST_SIGNAL_AFTER
from pargap.settings.config import load_toml
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log

TIMEOUT = 120
FIT = """
at_file = "{data}"
e0 = 0.0
default_sigma = [0.1, 1.0, 1.0, 0.0]
sparse_jitter = 1e-6
rnd_seed = 3
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.0
delta = 1.0
theta_uniform = 0.3
n_sparse = 20
sparse_method = "uniform"
[[gap]]
descriptor = "soap"
cutoff = 4.0
cutoff_transition_width = 1.0
n_max = {n_max}
l_max = {l_max}
atom_sigma = 0.6
covariance_type = "dot_product"
zeta = 2
delta = 0.1
n_sparse = 12
sparse_method = "cur_points"
"""


def _problem(folder, n_bulk, n_max=4, l_max=3):
    ase.io.write(folder / "train.xyz", lj_structures(n_bulk=n_bulk, n_cluster=6, seed=7), format="extxyz")
    (folder / "fit.toml").write_text(FIT.format(data=folder / "train.xyz", n_max=n_max, l_max=l_max))
    reference = fit(load_toml(folder / "fit.toml", ["solver='serial'"]), SerialComm(), Log(SerialComm(), quiet=True))
    return folder, reference.alpha


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _problem(tmp_path_factory.mktemp("sigterm"), n_bulk=14)


def pargap_fit(ranks, *args, env=None):
    cmd = [sys.executable, "-m", "pargap.cli.fit", *map(str, args)]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", *cmd]
        if env:
            cmd[3:3] = [a for k in env for a in ("-x", k)]
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        return run_job(cmd, timeout=TIMEOUT)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def alpha_of(path):
    with h5py.File(path, "r") as f:
        return np.concatenate([f["models"][k]["alpha"][()] for k in sorted(f["models"], key=int)])


def covered(folder):
    with h5py.File(folder / "factor.h5", "r") as f:
        assert f["R"].shape[0] <= f["R"].shape[1]  # a triangle, not the rows
        return f["structures"][()], int(f.attrs["n_structures"]), int(f.attrs["n_rows"])


def assert_same(alpha, reference):
    assert np.max(np.abs(alpha - reference)) / np.max(np.abs(reference)) < 1e-10


def test_stop_mid_rows_on_two_ranks_then_restart_on_three(small):
    folder, reference = small
    ck = folder / "ck2"
    run = pargap_fit(2, folder / "fit.toml", "--checkpoint", ck, "--set", f"gp_file='{folder / 'a.h5'}'",
                     env={TEST_SIGNAL_AFTER: "3"})
    assert run.returncode == EXIT_STOPPED, run.stderr
    assert f"resume with --restart {ck}" in run.stderr
    assert not (folder / "a.h5").exists()
    done, n, n_rows = covered(ck)
    assert 0 < len(done) < n == 20 and n_rows > 0  # a partial checkpoint: rows of some structures
    again = pargap_fit(3, folder / "fit.toml", "--restart", ck, "--set", f"gp_file='{folder / 'a.h5'}'")
    assert again.returncode == 0, again.stderr
    assert f"({len(done)} already in the checkpoint)" in again.stdout
    assert_same(alpha_of(folder / "a.h5"), reference)


def test_without_checkpoint_flag_the_default_folder_is_gp_file_checkpoint(small):
    folder, reference = small
    gp = folder / "b.h5"
    run = pargap_fit(1, folder / "fit.toml", "--set", f"gp_file='{gp}'", env={TEST_SIGNAL_AFTER: "8"})
    assert run.returncode == EXIT_STOPPED, run.stderr
    ck = folder / "b.h5.checkpoint"
    done, n, _ = covered(ck)
    assert 8 <= len(done) < n
    again = pargap_fit(1, folder / "fit.toml", "--restart", ck, "--set", f"gp_file='{gp}'")
    assert again.returncode == 0, again.stderr
    assert_same(alpha_of(gp), reference)


def test_real_sigterm_to_the_ranks_mid_fit(tmp_path):
    """SIGTERM sent to both ranks (as Slurm does to srun's tasks) once the rows are being built."""
    folder, reference = _problem(tmp_path, n_bulk=60, n_max=8, l_max=6)
    gp, ck = folder / "c.h5", folder / "ck"
    cmd = ["mpirun", "-n", "2", "--oversubscribe", sys.executable, "-m", "pargap.cli.fit", str(folder / "fit.toml"),
           "--checkpoint", str(ck), "--set", f"gp_file='{gp}'"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + TIMEOUT
        for line in proc.stdout:
            if "K_NM:" in line or time.time() > deadline:  # the rows are being built
                break
        ranks = [p for p in _session_members(proc.pid) if p != proc.pid and "python" in _cmdline(p)]
        assert len(ranks) == 2
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    except BaseException:
        _kill_job(proc)
        raise
    if proc.returncode == 0:
        pytest.skip("the fit finished before the signal arrived (machine too fast or too loaded)")
    assert proc.returncode == EXIT_STOPPED, err
    again = pargap_fit(2, folder / "fit.toml", "--restart", ck, "--set", f"gp_file='{gp}'")
    assert again.returncode == 0, again.stderr
    assert_same(alpha_of(gp), reference)


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def test_stop_after_a_time_limit_before_any_rows_saves_nothing_and_exits_75(small):
    folder, _ = small
    gp = folder / "d.h5"
    run = pargap_fit(1, folder / "fit.toml", "--stop-after", "0", "--set", f"gp_file='{gp}'")
    assert run.returncode == EXIT_STOPPED, run.stderr
    assert "after the read phase, before any rows: nothing to checkpoint" in run.stderr
    assert not gp.exists() and not (folder / "d.h5.checkpoint").exists()


def test_a_restart_stopped_again_saves_old_and_new_rows_together(small):
    """Stop, restart and stop again (the checkpoint now covers both runs' structures), restart: the
    same coefficients."""
    folder, reference = small
    ck, gp = folder / "ck_twice", folder / "e.h5"
    first = pargap_fit(1, folder / "fit.toml", "--checkpoint", ck, "--set", f"gp_file='{gp}'",
                       env={TEST_SIGNAL_AFTER: "4"})
    assert first.returncode == EXIT_STOPPED, first.stderr
    done_first, _, rows_first = covered(ck)
    second = pargap_fit(1, folder / "fit.toml", "--restart", ck, "--set", f"gp_file='{gp}'",
                        env={TEST_SIGNAL_AFTER: "4"})
    assert second.returncode == EXIT_STOPPED, second.stderr
    done_second, n, rows_second = covered(ck)
    assert set(done_first) < set(done_second) and len(done_second) < n and rows_second > rows_first
    last = pargap_fit(1, folder / "fit.toml", "--restart", ck, "--set", f"gp_file='{gp}'")
    assert last.returncode == 0, last.stderr
    assert_same(alpha_of(gp), reference)


def test_restart_refuses_a_changed_training_file(small, tmp_path):
    folder, _ = small
    data = tmp_path / "train.xyz"
    data.write_bytes((folder / "train.xyz").read_bytes())
    toml = tmp_path / "fit.toml"
    toml.write_text((folder / "fit.toml").read_text().replace(str(folder / "train.xyz"), str(data)))
    ck = tmp_path / "ck"
    run = pargap_fit(1, toml, "--set", f"gp_file='{tmp_path / 'c.h5'}'", "--checkpoint", ck,
                     env={TEST_SIGNAL_AFTER: "5"})
    assert run.returncode == EXIT_STOPPED, run.stderr
    frames = ase.io.read(data, ":")
    ase.io.write(data, frames[:-2], format="extxyz")  # two structures fewer: the saved rows no longer match
    again = pargap_fit(1, toml, "--restart", ck, "--set", f"gp_file='{tmp_path / 'c.h5'}'")
    assert again.returncode == 1
    assert "training data changed" in again.stderr and str(data) in again.stderr
    assert not (tmp_path / "c.h5").exists()
