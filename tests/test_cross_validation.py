"""pargap-tune: K-fold folds, CV errors equal to explicit per-fold fits, reproducible searches,
the same table on 1 and 2 ranks, and search files with mistakes."""

import csv
import dataclasses

import ase.io
import numpy as np
import pytest

from conftest import lj_structures, run_job
from pargap.analysis.evaluate import comparisons, error_table
from pargap.cli.tune import main as tune_main
from pargap.errors import ConfigError
from pargap.fitting.cross_validation import assign_folds, cross_validate, summarise, training_part
from pargap.fitting.fit import fit
from pargap.fitting.structures import load_structures
from pargap.fitting.tune import apply_candidate, draw_candidates, search_from_dict
from pargap.parallel import SerialComm
from pargap.progress import Log
from pargap.settings.config import load_toml

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
n_sparse = 20
sparse_method = "uniform"
"""

SEARCH = """method = "random"
seed = 4
n_candidates = 2
[parameters]
"gap.0.theta_uniform" = { min = 0.2, max = 0.6 }
"gap.*.cutoff gap.0.cutoff_transition_width" = [[4.5, 1.0], [5.0, 0.5]]
"""


@pytest.fixture
def lj_job(tmp_path):
    """18 structures labelled by smooth Lennard-Jones (a pair potential: distance_2b learns it)."""
    ase.io.write(tmp_path / "train.xyz", lj_structures(n_bulk=12, n_cluster=6, seed=0, rattle=0.05), format="extxyz")
    (tmp_path / "s.toml").write_text(SETTINGS)
    (tmp_path / "search.toml").write_text(SEARCH)
    return tmp_path


def test_folds_partition_the_data_and_depend_on_the_seed_only():
    folds = assign_folds(23, 5, seed=2, always=[0, 9])
    assert folds == assign_folds(23, 5, seed=2, always=[0, 9])
    assert folds != assign_folds(23, 5, seed=3, always=[0, 9])
    held = [i for part in folds for i in part]
    assert sorted(held) == sorted(set(range(23)) - {0, 9})  # disjoint, and everything but `always`
    assert {len(p) for p in folds} == {4, 5}
    for k, part in enumerate(folds):
        train = training_part(23, folds, k)
        assert not set(train) & set(part) and set(train) | set(part) == set(range(23))
    sub = assign_folds(23, 3, seed=2, subset=range(0, 23, 2))
    assert sorted(i for p in sub for i in p) == list(range(0, 23, 2))
    with pytest.raises(ConfigError, match="folds"):
        assign_folds(4, 5, seed=0)


def test_cv_error_is_the_mean_of_explicit_fold_fits(lj_job, monkeypatch):
    monkeypatch.chdir(lj_job)
    settings = load_toml("s.toml")
    comm, log = SerialComm(), Log(SerialComm(), quiet=True)
    (results,) = cross_validate([settings], comm, log, k=3, seed=5, folder=str(lj_job / "cv"))
    cv = summarise(results)
    frames = ase.io.read("train.xyz", ":")
    maes, mses = {"energy": [], "forces": []}, {"energy": [], "forces": []}
    for k, part in enumerate(assign_folds(len(frames), 3, seed=5)):
        train = [frames[i] for i in range(len(frames)) if i not in part]
        ase.io.write(f"fold{k}.xyz", train, format="extxyz")
        ase.io.write(f"test{k}.xyz", [frames[i] for i in part], format="extxyz")
        potential = fit(dataclasses.replace(settings, at_file=f"fold{k}.xyz"), comm, log)
        test = dataclasses.replace(settings, at_file=f"test{k}.xyz")
        structures, _ = load_structures(comm, test, log, check_sigma=False)
        table = error_table(comm, comparisons(potential, structures))["all"]
        for kind in maes:
            maes[kind].append(table[kind]["mae"])
            mses[kind].append(table[kind]["rmse"] ** 2)
    for kind in maes:
        assert cv[kind]["mae"] == pytest.approx(np.mean(maes[kind]), rel=1e-10)
        assert cv[kind]["rmse"] == pytest.approx(np.sqrt(np.mean(mses[kind])), rel=1e-10)
    mean_force = np.mean([np.abs(a.get_forces()).mean() for a in frames])
    assert cv["forces"]["mae"] < 0.25 * mean_force  # zero forces would give ~1.0: the fits are real
    assert not list((lj_job / "cv").glob(".cv_*"))  # the fold files are removed


def read_table(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_search_is_reproducible_and_writes_the_report(lj_job, monkeypatch, capsys):
    monkeypatch.chdir(lj_job)
    assert tune_main(["s.toml", "--cv", "3", "--search", "search.toml", "-q", "--out", "a"]) == 0
    out = capsys.readouterr().out
    assert "E MAE" in out and "(settings as given)" in out
    assert tune_main(["s.toml", "--cv", "3", "--search", "search.toml", "-q", "--out", "b"]) == 0
    first, again = read_table(lj_job / "a" / "cv_table.csv"), read_table(lj_job / "b" / "cv_table.csv")
    assert first == again and len(first) == 3
    best = load_toml(str(lj_job / "a" / "best.toml"))  # usable by pargap-fit as it is
    assert best.at_file == "train.xyz"
    scores = [float(r["score"]) for r in first]
    chosen = next(r for r in first if float(r["score"]) == min(scores))
    assert best.gap[0].theta_uniform == pytest.approx(
        0.3 if chosen["candidate"] == "0" else float(chosen["settings"].split("theta_uniform=")[1].split()[0]))
    assert (lj_job / "a" / "cv_best.png").stat().st_size > 1000
    # the fold fits are kept: a search run again refits only the ones it lacks, to the same table
    kept = sorted((lj_job / "a" / "fold_fits").glob("*.json"))
    assert len(kept) == 3 * 3
    kept[0].unlink()
    assert tune_main(["s.toml", "--cv", "3", "--search", "search.toml", "--out", "a"]) == 0
    assert "8 of 9 fold fits found" in capsys.readouterr().out
    assert read_table(lj_job / "a" / "cv_table.csv") == first and kept[0].exists()


def test_mpirun_tune_matches_serial(lj_job, monkeypatch):
    monkeypatch.chdir(lj_job)
    assert tune_main(["s.toml", "--cv", "3", "--search", "search.toml", "-q", "--out", "serial"]) == 0
    for groups in ("2", "1"):  # two groups of one rank; one group of two ranks (distributed fits)
        result = run_job(["mpirun", "-n", "2", "pargap-tune", "s.toml", "--cv", "3", "--search", "search.toml",
                          "-q", "--out", f"par{groups}", "--groups", groups], cwd=lj_job, timeout=150)
        assert result.returncode == 0, result.stderr
        serial, parallel = read_table(lj_job / "serial" / "cv_table.csv"), read_table(lj_job / f"par{groups}" / "cv_table.csv")
        assert len(serial) == len(parallel) == 3
        for a, b in zip(serial, parallel):
            assert a["settings"] == b["settings"]
            for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6), key  # TSQR vs one QR


def test_candidates_and_search_file_mistakes(lj_job, monkeypatch):
    monkeypatch.chdir(lj_job)
    import tomllib

    search = search_from_dict(tomllib.loads(SEARCH))
    drawn = draw_candidates(search)
    assert drawn == draw_candidates(search) and drawn[0] == {} and len(drawn) == 3
    assert all(0.2 <= c["gap.0.theta_uniform"] <= 0.6 for c in drawn[1:])
    settings = apply_candidate(load_toml("s.toml"), {"gap.*.cutoff": 4.5, "default_sigma.1": 0.05})
    assert settings.gap[0].cutoff == 4.5 and settings.default_sigma[1] == 0.05
    grid = search_from_dict({"method": "grid", "parameters": {"gap.0.delta": [1.0, 2.0], "gap.0.n_sparse": [5, 9]}})
    assert len(draw_candidates(grid)) == 5
    for bad, match in (({"method": "grid", "parameters": {"gap.0.delta": {"min": 1, "max": 2}}}, "range"),
                       ({"parameters": {"gap.0.delta": [1]}, "folds": 3}, "unknown key"),
                       ({"method": "best", "parameters": {"gap.0.delta": [1]}}, "method"),
                       ({"parameters": {}}, "no \\[parameters\\]")):
        with pytest.raises(ConfigError, match=match):
            search_from_dict(bad)
    with pytest.raises(ConfigError, match="gap_sigma"):
        apply_candidate(load_toml("s.toml"), {"gap.0.gap_sigma": 1.0})
    assert tune_main(["s.toml", "--cv", "3", "--seed", "5", "-q", "--out", "plain"]) == 0  # no search
    (row,) = read_table(lj_job / "plain" / "cv_table.csv")
    assert row["settings"] == "(settings as given)" and float(row["score"]) == 1.0
    (lj_job / "bad.toml").write_text('method = "grid"\n[parameters]\n"gap.3.delta" = [1.0]\n')
    assert tune_main(["s.toml", "--search", "bad.toml", "-q"]) == 1


def test_pargap_fit_cv_is_pargap_tune(lj_job, monkeypatch, capsys):
    from pargap.cli.fit import main as fit_main

    monkeypatch.chdir(lj_job)
    assert fit_main(["s.toml", "--cv", "3", "--search", "search.toml", "-q"]) == 0
    assert tune_main(["s.toml", "--cv", "3", "--search", "search.toml", "-q", "--out", "tuned"]) == 0
    assert read_table(lj_job / "lj_tune" / "cv_table.csv") == read_table(lj_job / "tuned" / "cv_table.csv")
    assert not (lj_job / "lj.h5").exists()  # no fit of the whole file
    for wrong in (["s.toml", "--search", "search.toml"], ["s.toml", "--cv", "3", "--optimise"],
                  ["at_file=train.xyz", "--cv", "3"]):
        with pytest.raises(SystemExit) as exit_:
            fit_main(wrong)
        assert exit_.value.code == 2
