"""The docs cannot drift: docs/config.md is the generator's output and every setting has a
description; the code blocks of docs/hdf5.md and docs/tutorial.md run (against small fitted
potentials) and their command lines parse; every attribute pargap writes is documented."""

import dataclasses
import re
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest

from pargap.cli import config_reference
from pargap.cli.eval import parser as eval_parser
from pargap.cli.fit import main as fit_main
from pargap.cli.fit import parser as fit_parser
from pargap.errors import ConfigError
from pargap.settings import config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def code_blocks(path, language):
    """The fenced code blocks of one language ("" for plain fences) in a markdown file, in order."""
    blocks, current = [], None
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("```") and current is None:
            current = [] if line.strip() == "```" + language else False
        elif line.startswith("```"):
            if current is not False:
                blocks.append("".join(current))
            current = None
        elif isinstance(current, list):
            current.append(line)
    return blocks


def commands(path, program):
    """Command lines of ``program`` in the sh blocks (continuation lines joined, mpirun stripped)."""
    out = []
    for block in code_blocks(path, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["mpirun"]:
                words = words[words.index(program):] if program in words else []
            if words[:1] == [program]:
                out.append(words[1:])
    return out


# ---- the settings reference ------------------------------------------------------------------------

def test_every_setting_has_a_description():
    missing = config_reference.missing_descriptions()
    assert not missing, config_reference.HOW_TO_FIX.format(keys=", ".join(missing))
    stale = sorted(set(config_reference.DESCRIPTIONS) - set(config_reference.setting_keys()))
    assert not stale, f"remove {stale} from DESCRIPTIONS in pargap/cli/config_reference.py (no such setting)"
    stale = sorted(set(config_reference.PARGAP_ONLY) - set(config_reference.setting_keys()))
    assert not stale, f"remove {stale} from PARGAP_ONLY in pargap/cli/config_reference.py (no such setting)"


def test_config_md_is_the_generated_reference():
    text = config_reference.render()
    assert config_reference.OUTPUT == DOCS / "config.md"
    assert (DOCS / "config.md").read_text() == text, (
        "docs/config.md is out of date: run `python -m pargap.cli.config_reference` and commit docs/config.md")
    for f in dataclasses.fields(config.GapSettings) + dataclasses.fields(config.FitSettings):
        assert f"`{f.name}`" in text or f.name == "gap"


GAP = {"descriptor": "distance_2b", "cutoff": 4.0, "delta": 1.0, "theta_uniform": 1.0, "zeta": 2.0,
       "n_sparse": 5, "sparse_file": "points.txt"}
SOAP = {"l_max": 2, "n_max": 2, "atom_sigma": 0.5}


def build(key, value):
    """Settings with one setting changed (the others minimal and valid)."""
    cls, name = key.split(".")
    gap = dict(GAP)
    data = {"at_file": "x.xyz", "default_sigma": [0.01, 0.1, 0.1, 0.0]}
    if cls == "GapSettings":
        gap[name] = value
        if value == "soap":
            gap.update(SOAP)
    else:
        data[name] = value
    return config.settings_from_dict({**data, "gap": [gap]})


@pytest.mark.parametrize("key", sorted(config_reference.ALLOWED))
def test_allowed_values_are_the_ones_the_settings_take(key):
    """Every listed value is accepted; every word of the rejection message that the settings
    would accept as a value is listed (so a value added to pargap.settings.config shows up here)."""
    allowed = config_reference.ALLOWED[key]
    for value in allowed:
        build(key, value)
    with pytest.raises(ConfigError) as exc:
        build(key, "no_such_value")
    accepted = []
    for word in set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(exc.value))):
        try:
            build(key, word)
            accepted.append(word)
        except ConfigError:
            pass
    assert set(accepted) <= set(allowed), (
        f"{key} also takes {sorted(set(accepted) - set(allowed))}: add them to ALLOWED in "
        f"pargap/cli/config_reference.py and run `python -m pargap.cli.config_reference`")


# ---- docs/hdf5.md ----------------------------------------------------------------------------------

@pytest.fixture
def ta_dir(tmp_path, monkeypatch):
    """A working folder with examples/ (the Ta data) and the 2-body Ta potential of docs/hdf5.md,
    fitted by the command the page shows (about a second)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    fits = commands(DOCS / "hdf5.md", "pargap-fit")
    assert len(fits) == 1
    assert fit_main([*fits[0], "-q"]) == 0
    assert (tmp_path / "Ta_2b.h5").exists()
    return tmp_path


def test_hdf5_snippet_evaluates_the_potential_by_hand(ta_dir, capsys):
    from pargap.potential.potential import Potential

    namespace = {}
    for block in code_blocks(DOCS / "hdf5.md", "python"):
        exec(compile(block, "docs/hdf5.md", "exec"), namespace)
    atoms = namespace["atoms"]
    reference = Potential.load(ta_dir / "Ta_2b.h5").predict(atoms, gradients=False)["energy"]
    assert namespace["by_hand"] == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert atoms.pbc.all() and len(atoms) == 16  # a periodic structure: images are counted
    printed = capsys.readouterr().out
    shown = re.search(r"which prints `(.*?)`", (DOCS / "hdf5.md").read_text()).group(1)
    assert printed.strip() == shown, "update the printed line quoted in docs/hdf5.md"


def test_hdf5_layout_lists_everything_in_the_file(ta_dir):
    text = (DOCS / "hdf5.md").read_text()
    layout = code_blocks(DOCS / "hdf5.md", "")[0]
    paths = [m.group(1).replace("<k>", "0") for m in re.finditer(r"^(/\S+)", layout, re.M)]
    with h5py.File(ta_dir / "Ta_2b.h5", "r") as f:
        for path in paths:
            assert path in f, f"docs/hdf5.md lists {path}, which the potential file lacks"
        written = []
        f.visit(lambda name: written.append("/" + name))
        for name in written:
            assert re.sub(r"^/models/\d+", "/models/<k>", name) in layout, f"{name} is not in docs/hdf5.md"
        for group in ("/", "/provenance", "/settings", "/models/0"):
            for attr in f[group].attrs:
                documented = re.sub(r"^(descriptor|kernel)\..*", r"\1.<name>", attr)
                assert documented in layout, f"attribute {attr} of {group} is not in docs/hdf5.md"
    assert "factor.h5" in text and "models.h5" in text and "/kernel" in text


# ---- docs/tutorial.md ------------------------------------------------------------------------------

def test_tutorial_command_lines_parse():
    tutorial = DOCS / "tutorial.md"
    fits, evals = commands(tutorial, "pargap-fit"), commands(tutorial, "pargap-eval")
    assert fits and evals
    assert any("--learning-curve" in args for args in fits)
    assert any("--plot" in args for args in evals)
    for args in fits:
        fit_parser().parse_args(args)
    for args in evals:
        eval_parser().parse_args(args)
    for args in fits + evals:
        for word in args:
            if word.startswith("examples/"):
                assert (ROOT / word).exists(), word


def test_tutorial_md_run_conserves_energy(ta_dir, capsys):
    """The tutorial's Python (NVE molecular dynamics with GAPCalculator), run with the quick 2-body
    potential of docs/hdf5.md standing in for the tutorial's 2-body + SOAP one."""
    (ta_dir / "Ta_2b.h5").rename(ta_dir / "Ta_gap.h5")
    namespace = {}
    for block in code_blocks(DOCS / "tutorial.md", "python"):
        exec(compile(block, "docs/tutorial.md", "exec"), namespace)
    energies = np.array(namespace["energies"])
    assert len(energies) >= 5
    assert np.ptp(energies) < 1e-3, f"total energy drifts by {np.ptp(energies)} eV/atom"
    assert namespace["atoms"].get_kinetic_energy() > 0
    assert "total energy varies by" in capsys.readouterr().out
