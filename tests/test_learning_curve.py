"""pargap-fit --learning-curve: nested subsets, errors that fall with the training-set size, the
plot and the table, and the same curve under mpirun -n 2."""

import csv
import json

import ase.io
import h5py
import matplotlib.image
import numpy as np
import pytest

from conftest import lj_structures, run_job
from pargap.cli.fit import main as fit_main
from pargap.errors import ConfigError
from pargap.fitting.learning_curve import parse_fractions, parse_validation, plan_subsets

SETTINGS = """at_file = "train.xyz"
gp_file = "lj.h5"
default_sigma = [0.002, 0.02, 0.02, 0.0]
e0 = 0.0
rnd_seed = 1

[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.0
delta = 1.0
theta_uniform = 0.3
n_sparse = 40
sparse_method = "uniform"
"""


@pytest.fixture
def lj_job(tmp_path):
    """24 training and 8 validation structures labelled by smooth Lennard-Jones (a pair potential,
    so a distance_2b GAP can learn it), and the settings file."""
    ase.io.write(tmp_path / "train.xyz", lj_structures(n_bulk=16, n_cluster=8, seed=0), format="extxyz")
    ase.io.write(tmp_path / "val.xyz", lj_structures(n_bulk=4, n_cluster=4, seed=7), format="extxyz")
    (tmp_path / "s.toml").write_text(SETTINGS)
    return tmp_path


def test_subsets_are_nested_seeded_and_keep_isolated_atoms():
    subsets, validation = plan_subsets(40, (0.1, 0.25, 0.5, 1.0), seed=3, always=[0, 7], held_out=0.2)
    again = plan_subsets(40, (0.1, 0.25, 0.5, 1.0), seed=3, always=[0, 7], held_out=0.2)
    assert (subsets, validation) == again
    assert len(validation) == 8 and not {0, 7} & set(validation)
    assert [len(s) for s in subsets] == [2 + 3, 2 + 8, 2 + 15, 2 + 30]
    for small, large in zip(subsets, subsets[1:]):
        assert set(small) < set(large)
    for s in subsets:
        assert s == sorted(s) and {0, 7} <= set(s) and not set(s) & set(validation)
    assert set(subsets[-1]) | set(validation) == set(range(40))
    other, _ = plan_subsets(40, (0.1, 0.25, 0.5, 1.0), seed=4, always=[0, 7], held_out=0.2)
    assert other != subsets


def test_fractions_and_validation_arguments():
    assert parse_fractions(None) == (0.1, 0.2, 0.4, 0.8, 1.0)
    assert parse_fractions("3") == (0.25, 0.5, 1.0)
    assert parse_fractions("1, 0.2,0.5") == (0.2, 0.5, 1.0)
    for bad in ("0", "0.5,2", "settings.toml"):
        with pytest.raises(ConfigError, match="learning-curve"):
            parse_fractions(bad)
    assert parse_validation("0.2") == 0.2 and parse_validation("test.xyz") == "test.xyz"
    for bad in ("1.0", "0"):
        with pytest.raises(ConfigError, match="fraction"):
            parse_validation(bad)
    with pytest.raises(ConfigError, match="needs --validation"):
        parse_validation(None)


def read_csv(path):
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def test_learning_curve_errors_fall_and_outputs_are_real(lj_job, monkeypatch, capsys):
    monkeypatch.chdir(lj_job)
    assert fit_main(["s.toml", "--learning-curve", "0.1,0.5,1", "--validation", "val.xyz", "-q"]) == 0
    printed = capsys.readouterr().out
    folder = lj_job / "lj_learning_curve"
    rows = read_csv(folder / "learning_curve.csv")
    assert [r["n_structures"] for r in rows] == [2, 12, 24]
    assert len([line for line in printed.splitlines() if line.split() and line.split()[0].isdigit()]) == 3
    # more data, smaller validation errors (a pair potential learned by a pair model)
    first, last = rows[0], rows[-1]
    for key in ("energy_rmse", "energy_mae", "forces_rmse", "forces_mae"):
        assert last[key] < 0.5 * first[key], key
    assert rows[1]["forces_rmse"] < first["forces_rmse"]
    table = json.loads((folder / "learning_curve.json").read_text())
    assert len(table["rows"]) == 3 and len(table["subsets"]) == 3 and table["subsets"][-1] == list(range(24))
    image = matplotlib.image.imread(folder / "learning_curve.png")
    assert (folder / "learning_curve.png").stat().st_size > 20_000
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert np.std(image[..., :3]) > 0.02, "learning_curve.png looks blank"
    assert not list(folder.glob(".subset*")), "temporary subset files left behind"
    # the full subset is the training file itself: the same coefficients as a plain fit
    assert fit_main(["s.toml", "-q", "--set", 'gp_file="full.h5"']) == 0
    with h5py.File(folder / "potential_24.h5") as a, h5py.File(lj_job / "full.h5") as b:
        np.testing.assert_allclose(a["models/0/alpha"][()], b["models/0/alpha"][()], rtol=1e-10, atol=1e-12)


def test_held_out_fraction_and_usage_errors(lj_job, monkeypatch, capsys):
    monkeypatch.chdir(lj_job)
    assert fit_main(["s.toml", "--learning-curve", "2", "--validation", "0.25", "-q"]) == 0
    folder = lj_job / "lj_learning_curve"
    rows = read_csv(folder / "learning_curve.csv")
    assert [r["n_structures"] for r in rows] == [9, 18]  # 24 - 6 held out, halved
    assert len(ase.io.read(folder / "validation.xyz", ":")) == 6
    capsys.readouterr()
    assert fit_main(["s.toml", "--learning-curve"]) == 1
    assert "needs --validation" in capsys.readouterr().err
    for usage in (["--validation", "val.xyz"], ["--learning-curve", "--validation", "val.xyz", "--restart", "ck"]):
        with pytest.raises(SystemExit) as exc:
            fit_main(["s.toml", *usage])
        assert exc.value.code == 2


def test_mpirun_learning_curve_matches_serial(lj_job, monkeypatch):
    monkeypatch.chdir(lj_job)
    args = ["--learning-curve", "0.25,1", "--validation", "val.xyz", "-q"]
    assert fit_main(["s.toml", *args]) == 0
    serial = read_csv(lj_job / "lj_learning_curve" / "learning_curve.csv")
    result = run_job(["mpirun", "-n", "2", "pargap-fit", "s.toml", "--set", 'gp_file="par.h5"', *args],
                     cwd=lj_job, timeout=120)
    assert result.returncode == 0, result.stderr
    parallel = read_csv(lj_job / "par_learning_curve" / "learning_curve.csv")
    assert len(parallel) == len(serial) == 2
    for a, b in zip(serial, parallel):
        for key, value in a.items():
            assert b[key] == pytest.approx(value, rel=1e-5), key  # TSQR vs one QR: rounding


def test_failed_subset_fit_is_reported_and_cleaned_up(lj_job, monkeypatch, capsys):
    """No e0 and no isolated atom: the first fit fails with the fit's own message, exit 1, and no
    temporary subset file is left."""
    monkeypatch.chdir(lj_job)
    (lj_job / "s.toml").write_text(SETTINGS.replace("e0 = 0.0\n", ""))
    assert fit_main(["s.toml", "--learning-curve", "2", "--validation", "val.xyz", "-q"]) == 1
    assert "isolated" in capsys.readouterr().err
    assert not list((lj_job / "lj_learning_curve").glob(".subset*"))
