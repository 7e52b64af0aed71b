"""The command lines: pargap-fit (gap_fit form, TOML, --set, --print-config), pargap-eval and the
potential file they write."""

import hashlib
import json
import tomllib
from pathlib import Path

import ase.build
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import run_job, small_lj_frames
from pargap.cli.eval import main as eval_main
from pargap.cli.fit import main as fit_main

MPI_TIMEOUT = 120

GAP_FIELDS = dict(cutoff=5.0, cutoff_transition_width=1.0, covariance_type="ard_se", delta=1.0,
                  theta_uniform=0.5, n_sparse=10, sparse_method="uniform")


# ---- helpers -----------------------------------------------------------------------------------

def make_frames():
    return small_lj_frames()


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.xyz"
    ase.io.write(path, make_frames(), format="extxyz")
    return path


def gap_string(**override):
    fields = {**GAP_FIELDS, **override}
    return "gap={distance_2b " + " ".join(f"{k}={v}" for k, v in fields.items()) + "}"


def gap_toml(**override):
    fields = {**GAP_FIELDS, **override}
    return "[[gap]]\ndescriptor = \"distance_2b\"\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


def gapfit_args(at_file, gp_file, sigma="0.01 0.1 0.1 0.0", extra=(), **gap):
    return [f"at_file={at_file}", gap_string(**gap), f"default_sigma={{{sigma}}}", "e0=0.0",
            "rnd_seed=1", f"gp_file={gp_file}", *extra]


def write_toml(path, at_file, gp_file, sigma=(0.01, 0.1, 0.1, 0.0), **gap):
    path.write_text(
        f"at_file = {json.dumps(str(at_file))}\ngp_file = {json.dumps(str(gp_file))}\n"
        f"default_sigma = {json.dumps(list(sigma))}\ne0 = 0.0\nrnd_seed = 1\n\n{gap_toml(**gap)}")
    return path


def run_fit(capsys, args):
    """pargap-fit in this process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = fit_main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def run_eval(capsys, args):
    capsys.readouterr()
    try:
        rc = eval_main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def fit_ok(capsys, args):
    rc, out, err = run_fit(capsys, args)
    assert rc == 0, f"pargap-fit {args} failed ({rc}):\n{err}"
    return out




def run_command(cmd, cwd, timeout=MPI_TIMEOUT):
    """Run a command (mpirun or a console script); a timeout kills the job and fails the test."""
    return run_job(cmd, cwd=cwd, timeout=timeout)


def read_model(path):
    with h5py.File(path, "r") as f:
        return f["models/0/alpha"][()], f["models/0/sparse_x"][()]


# ---- (a) --help ----------------------------------------------------------------------------------

@pytest.mark.parametrize("main", [fit_main, eval_main], ids=["pargap-fit", "pargap-eval"])
def test_help_in_process(main, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    assert "mpirun" in out


@pytest.mark.parametrize("command", ["pargap-fit", "pargap-eval"])
def test_help_console_script(command, tmp_path):
    result = run_command([command, "--help"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert command in result.stdout
    assert "mpirun" in result.stdout


# ---- (b) gap_fit command line == TOML --------------------------------------------------------------

@pytest.mark.parametrize("sparse_method", ["uniform", "random"])
def test_gapfit_form_equals_toml(sparse_method, capsys, tmp_path, train):
    a, b = tmp_path / "cli.h5", tmp_path / "toml.h5"
    fit_ok(capsys, gapfit_args(train, a, sparse_method=sparse_method))
    settings = write_toml(tmp_path / "fit.toml", train, b, sparse_method=sparse_method)
    fit_ok(capsys, [settings])
    alpha_a, x_a = read_model(a)
    alpha_b, x_b = read_model(b)
    assert alpha_a.shape == (10,) and x_a.shape == (10, 1)
    assert np.array_equal(x_a, x_b)
    assert np.array_equal(alpha_a, alpha_b)


def test_rnd_seed_matters_for_random_sparse_points(capsys, tmp_path, train):
    """Control for the comparison above: another seed picks other random sparse points."""
    a, b = tmp_path / "seed1.h5", tmp_path / "seed2.h5"
    fit_ok(capsys, gapfit_args(train, a, sparse_method="random"))
    fit_ok(capsys, gapfit_args(train, b, sparse_method="random", extra=("rnd_seed=2",)))
    assert not np.array_equal(read_model(a)[1], read_model(b)[1])


# ---- (c) --print-config ------------------------------------------------------------------------------

def test_print_config_round_trip(capsys, tmp_path, train):
    gp_file = tmp_path / "pot.h5"
    args = gapfit_args(train, gp_file, sparse_method="random", extra=("sparse_jitter=1e-9",))
    rc, out, err = run_fit(capsys, args + ["--print-config"])
    assert rc == 0, err
    assert not gp_file.exists(), "--print-config must not fit"
    data = tomllib.loads(out)  # valid TOML
    assert data["at_file"] == str(train)
    assert data["gp_file"] == str(gp_file)
    assert data["default_sigma"] == [0.01, 0.1, 0.1, 0.0]
    assert data["rnd_seed"] == 1 and data["sparse_jitter"] == 1e-9
    assert len(data["gap"]) == 1 and data["gap"][0]["n_sparse"] == 10
    assert data["gap"][0]["sparse_method"] == "random"

    fit_ok(capsys, args)
    reference = read_model(gp_file)
    gp_file.rename(tmp_path / "reference.h5")
    settings = tmp_path / "printed.toml"
    settings.write_text(out)
    fit_ok(capsys, [settings])
    again = read_model(gp_file)
    assert np.array_equal(reference[1], again[1])
    assert np.array_equal(reference[0], again[0])


def test_print_config_of_toml_is_stable(capsys, tmp_path, train):
    """TOML -> --print-config -> TOML prints the same settings again."""
    settings = write_toml(tmp_path / "fit.toml", train, tmp_path / "pot.h5")
    rc, first, err = run_fit(capsys, [settings, "--print-config"])
    assert rc == 0, err
    (tmp_path / "printed.toml").write_text(first)
    rc, second, err = run_fit(capsys, [tmp_path / "printed.toml", "--print-config"])
    assert rc == 0, err
    assert tomllib.loads(first) == tomllib.loads(second)


# ---- (d) --set ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["toml", "gapfit"])
def test_set_n_sparse(form, capsys, tmp_path, train):
    gp_file = tmp_path / "pot.h5"
    if form == "toml":
        args = [write_toml(tmp_path / "fit.toml", train, gp_file)]
    else:
        args = gapfit_args(train, gp_file)
    fit_ok(capsys, args + ["--set", "gap.0.n_sparse=7"])
    alpha, x = read_model(gp_file)
    assert alpha.shape == (7,)
    assert x.shape == (7, 1)
    with h5py.File(gp_file, "r") as f:
        assert tomllib.loads(f["settings"].attrs["toml"])["gap"][0]["n_sparse"] == 7


# ---- (e) pargap-eval ----------------------------------------------------------------------------------

@pytest.fixture
def tight_fit(capsys, tmp_path, train):
    """A potential fitted at tiny noise on noise-free pair-potential data."""
    gp_file = tmp_path / "tight.h5"
    fit_ok(capsys, gapfit_args(train, gp_file, sigma="0.001 0.01 0.01 0.0", n_sparse=15))
    return gp_file


def test_eval_table(capsys, tight_fit, train):
    rc, out, err = run_eval(capsys, [tight_fit, train])
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()]
    all_rows = {r[1]: r for r in rows if len(r) >= 5 and r[0] == "all"}
    assert "energy" in all_rows and "forces" in all_rows, out
    n_forces = 3 * sum(len(a) for a in ase.io.read(train, ":"))
    assert int(all_rows["forces"][2]) == n_forces
    assert int(all_rows["energy"][2]) == len(ase.io.read(train, ":"))


def test_eval_json_small_errors(capsys, tight_fit, train):
    rc, out, err = run_eval(capsys, [tight_fit, train, "--json"])
    assert rc == 0, err
    table = json.loads(out)  # the whole of stdout is JSON
    for kind in ("energy", "forces"):
        entry = table["all"][kind]
        assert set(entry) >= {"mae", "rmse"}
        assert 0 <= entry["mae"] <= entry["rmse"]
    frames = ase.io.read(train, ":")
    forces = np.concatenate([a.get_forces().ravel() for a in frames])
    energies = np.array([a.get_potential_energy() / len(a) for a in frames])
    assert forces.std() > 0.01  # the data has something to learn
    assert table["all"]["forces"]["rmse"] < 0.05 * forces.std(), table["all"]["forces"]
    assert table["all"]["energy"]["rmse"] < 0.05 * energies.std(), table["all"]["energy"]


def test_eval_detects_a_poor_fit(capsys, tmp_path, train):
    """Control: a potential from energies of the isolated atom only is far off on the forces."""
    frames = ase.io.read(train, ":")
    gp_file = tmp_path / "poor.h5"
    fit_ok(capsys, gapfit_args(train, gp_file, sigma="10.0 10.0 10.0 0.0", n_sparse=3))
    rc, out, err = run_eval(capsys, [gp_file, train, "--json"])
    assert rc == 0, err
    forces = np.concatenate([a.get_forces().ravel() for a in frames])
    assert json.loads(out)["all"]["forces"]["rmse"] > 0.05 * forces.std()


def test_eval_unknown_species_names_file_and_structure(capsys, tmp_path, train):
    """pargap-eval on a structure with a species the potential does not know: exit 1 with a message
    naming the data file and the structure (0-based), as pargap's input errors do."""
    gp_file = tmp_path / "pot.h5"
    fit_ok(capsys, gapfit_args(train, gp_file))
    frames = make_frames()
    results = dict(frames[4].calc.results)
    frames[4].symbols[0] = "Cu"
    frames[4].calc = SinglePointCalculator(frames[4], **results)
    data = tmp_path / "test_cu.xyz"
    ase.io.write(data, frames, format="extxyz")
    rc, out, err = run_eval(capsys, [gp_file, data])
    assert rc == 1, err
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("pargap: error:")]
    assert len(message) == 1, err
    assert "29" in message[0] or "Cu" in message[0], message
    assert str(data) in message[0], f"the data file is not named: {message[0]}"
    assert "structure 4" in message[0], f"the structure is not named: {message[0]}"


# ---- (f) the HDF5 layout ------------------------------------------------------------------------------

def test_potential_file_layout(capsys, tmp_path, train):
    gp_file = tmp_path / "pot.h5"
    fit_ok(capsys, gapfit_args(train, gp_file))
    with h5py.File(gp_file, "r") as f:
        assert f.attrs["format"] == "pargap-potential"
        assert f["e0/Z"][()].tolist() == [18]
        assert f["e0/e0"][()].tolist() == [0.0]
        assert list(f["models"]) == ["0"]  # Ar only: one species pair
        alpha = f["models/0/alpha"][()]
        sparse_x = f["models/0/sparse_x"][()]
        weight = f["models/0/sparse_weight"][()]
        M = 10
        assert alpha.shape == (M,) and np.all(np.isfinite(alpha))
        assert sparse_x.shape == (M, 1)
        assert np.all((sparse_x > 0) & (sparse_x <= 5.0))
        assert weight.shape == (M,)
        assert np.all((weight >= 0) & (weight <= 1))
        settings = tomllib.loads(f["settings"].attrs["toml"])
        assert settings["gap"][0]["n_sparse"] == M
        assert settings["default_sigma"] == [0.01, 0.1, 0.1, 0.0]
        prov = f["provenance"].attrs
        assert "ranks" in prov and int(prov["ranks"]) == 1
        assert prov["at_file_sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".pargap-*"))


def test_mpirun_fit_matches_serial(capsys, tmp_path, train):
    """mpirun -n 2 gives the serial potential to rounding and records 2 ranks and the data hash."""
    serial, parallel = tmp_path / "serial.h5", tmp_path / "mpi.h5"
    fit_ok(capsys, gapfit_args(train, serial))
    result = run_command(["mpirun", "-n", "2", "pargap-fit", *gapfit_args(train, parallel)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    a_serial, x_serial = read_model(serial)
    a_mpi, x_mpi = read_model(parallel)
    assert np.array_equal(x_serial, x_mpi)
    np.testing.assert_allclose(a_mpi, a_serial, rtol=1e-6, atol=1e-8 * np.abs(a_serial).max())
    with h5py.File(parallel, "r") as f:
        assert int(f["provenance"].attrs["ranks"]) == 2
        assert f["provenance"].attrs["at_file_sha256"] == hashlib.sha256(train.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".pargap-*"))


# ---- (g) no arguments ------------------------------------------------------------------------------------

def test_no_arguments_in_process(capsys):
    rc, out, err = run_fit(capsys, [])
    assert rc != 0
    assert "Traceback" not in err
    assert "settings" in err.lower(), err
    assert "--help" in err or "usage" in err.lower(), err


def test_no_arguments_console_script(tmp_path):
    result = run_command(["pargap-fit"], cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "settings" in result.stderr.lower(), result.stderr
    assert list(tmp_path.iterdir()) == [], "pargap-fit without arguments wrote files"
