"""The example fits in examples/<name>/: their files, settings, and the validation split helper.

The fits themselves are not run here (minutes each); run examples/<name>/run.sh."""

import importlib.util
import os
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import bar

from pargap.settings.config import load_toml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = [f"zuo2020-{el}" for el in ("Ni", "Cu", "Li", "Mo", "Si", "Ge")] + [
    "ta", "w", "rmd17-aspirin", "rmd17-ethanol", "rmd17-benzene"]

_spec = importlib.util.spec_from_file_location("examples_split", EXAMPLES / "split.py")
split = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split)
_spec = importlib.util.spec_from_file_location("examples_fetch", EXAMPLES / "fetch.py")
fetch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch)


def run_sh_value(name, key):
    text = (EXAMPLES / name / "run.sh").read_text()
    m = re.search(rf"^{key}=(\S+)", text, re.MULTILINE)
    assert m, f"{name}/run.sh sets no {key}"
    return m.group(1)


@pytest.mark.parametrize("name", NAMES)
def test_example_folder(name):
    folder = EXAMPLES / name
    for f in ("fit.toml", "run.sh", "README.md"):
        assert (folder / f).is_file(), f"{name}/{f} missing"
    assert os.access(folder / "run.sh", os.X_OK), f"{name}/run.sh is not executable"
    settings = load_toml(folder / "fit.toml")
    assert settings.at_file == "train.xyz" and settings.gp_file == "potential.h5"
    assert run_sh_value(name, "EXAMPLE") == name
    source = run_sh_value(name, "SOURCE")
    assert source in fetch.expected_sums(), f"{name}: training data {source} has no checksum in {fetch.SUMS}"
    assert (EXAMPLES / "data" / f"{source}.xz").is_file() or source in fetch.REMOTE, f"{name}: no source for {source}"


def _frames(path):
    return ["".join(f) for f in split.frames(path)]


def test_split_rule_per_group():
    groups = ["a"] * 25 + [None] * 12 + ["b"] * 9 + ["a"] * 5
    flags = split.split_indices(groups, every=10)
    assert flags == split.split_indices(groups, every=10)
    val = [i for i, f in enumerate(flags) if f]
    # 'a' has 30 structures: its 10th, 20th, 30th go to validation (file positions 9, 19 and 50);
    # None (12): its 10th (position 34); 'b' (9 < 10): none
    assert val == [9, 19, 34, 50]
    with pytest.raises(ValueError):
        split.split_indices(groups, every=1)


def test_split_file_is_deterministic_disjoint_and_verbatim(tmp_path):
    rng = np.random.default_rng(3)
    frames = []
    for k in range(37):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=k)
        atoms.info["energy"] = float(rng.normal())
        atoms.info["config_type"] = "bulk" if k % 3 else "other"
        atoms.arrays["force"] = rng.normal(size=(len(atoms), 3))
        frames.append(atoms)
    source = tmp_path / "all.xyz"
    ase.io.write(source, frames, format="extxyz")
    n1 = split.split_file(source, tmp_path / "one")
    n2 = split.split_file(source, tmp_path / "two")
    assert n1 == n2 == (34, 3)
    for f in ("train.xyz", "validation.xyz"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes()
    original = _frames(source)
    train, val = _frames(tmp_path / "one" / "train.xyz"), _frames(tmp_path / "one" / "validation.xyz")
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(original)
    # every 10th per config type: 'bulk' has 24 structures (2 held out), 'other' 13 (1)
    types = [a.info["config_type"] for a in ase.io.read(tmp_path / "one" / "validation.xyz", ":")]
    assert sorted(types) == ["bulk", "bulk", "other"]


def test_stress_bar_to_virial_sign_and_units(tmp_path):
    """A compressed and sheared Cu cell under EMT: its ASE stress (eV/A^3, tensile positive) written
    as a LAMMPS pressure tensor in bar (compressive positive) must come back as W = -stress * V."""
    atoms = bulk("Cu", "fcc", a=3.5, cubic=True)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + [[0, 0.02, 0], [0, 0, 0], [0.01, 0, -0.01]]), scale_atoms=True)
    atoms.calc = EMT()
    stress = atoms.get_stress(voigt=False)
    assert np.trace(stress) < 0  # compressed: ASE's stress is negative
    pressure_bar = -stress / bar
    cell = " ".join(repr(float(x)) for x in atoms.cell[:].ravel())
    p = " ".join(repr(float(x)) for x in pressure_bar.ravel())
    source = tmp_path / "ta_like.xyz"
    lines = [f"{len(atoms)}\n", f'Lattice="{cell}" Properties=species:S:1:pos:R:3 energy=0.0 '
             f'stress="{p}" config_type=x pbc="T T T"\n']
    lines += [f"Cu {x} {y} {z}\n" for x, y, z in atoms.positions]
    source.write_text("".join(lines))
    split.split_file(source, tmp_path / "out", stress_bar=True)
    text = (tmp_path / "out" / "train.xyz").read_text()
    assert "stress=" not in text
    virial = np.array(ase.io.read(tmp_path / "out" / "train.xyz").info["virial"], dtype=float).reshape(3, 3)
    np.testing.assert_allclose(virial, -stress * atoms.get_volume(), rtol=1e-6, atol=1e-10)
    assert np.trace(virial) > 0  # GAP convention: positive under compression


def test_stress_conversion_matches_the_ta_quickstart(tmp_path, monkeypatch):
    """The virials agree with examples/Ta_train.xyz, converted by make_ta_example.py and checked
    there against -V dE/dV on the volume scans."""
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setenv("PARGAP_DATA_CACHE", str(tmp_path / "cache"))
    split.split_file(fetch.fetch("ta_snap_thompson2015/Ta_train.xyz"), tmp_path, stress_bar=True)
    ours = {round(a.info["energy"], 6): a.info["virial"] for a in ase.io.read(tmp_path / "train.xyz", ":")}
    checked = 0
    for a in ase.io.read(EXAMPLES / "Ta_train.xyz", ":20"):
        e = round(a.get_potential_energy(), 6)
        if e in ours:
            np.testing.assert_allclose(np.reshape(ours[e], (3, 3)), np.reshape(a.info["virial"], (3, 3)),
                                       rtol=1e-9, atol=1e-9)
            checked += 1
    assert checked >= 10
