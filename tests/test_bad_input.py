"""Bad input ends a fit with one clear message and no output file, serially and under mpirun.

Every case checks: a non-zero exit code; stderr names the file, the structure (0-based) and the key
where they apply; no potential file and no ``.pargap-*`` temporary file is left behind; under
``mpirun -n 2`` the job ends (a hang fails the test through the timeout) with exactly one message.
"""

import re
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import LJ, run_job, small_lj_frames
from pargap.cli.fit import main as fit_main
from pargap.parallel import partition_structures

MPI_TIMEOUT = 120

GAP = ("gap={distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 "
       "theta_uniform=0.5 n_sparse=10 sparse_method=uniform}")
SIGMA = "default_sigma={0.01 0.1 0.1 0.0}"

GAP_TOML = """
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.0
covariance_type = "ard_se"
delta = 1.0
theta_uniform = 0.5
n_sparse = 10
sparse_method = "uniform"
"""


# ---- test data ---------------------------------------------------------------------------------

def _label(atoms):
    """Energy and forces from ASE's smooth Lennard-Jones, frozen in a SinglePointCalculator."""
    atoms.calc = LennardJones(**LJ)
    atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    return atoms


def make_frames(forces=True):
    return small_lj_frames(forces)


def write_frames(path, frames):
    ase.io.write(path, frames, format="extxyz")
    return path


def owners(frames, size=2):
    """{rank: structures owned} under pargap's partition for ``size`` ranks."""
    n_atoms = [len(a) for a in frames]
    return {r: partition_structures(n_atoms, r, size).structures for r in range(size)}


def structure_on_rank(frames, rank, size=2):
    """A multi-atom structure owned by ``rank`` (3 for rank 1 when the partition allows it)."""
    mine = [i for i in owners(frames, size)[rank] if len(frames[i]) > 1]
    assert mine, f"no multi-atom structure on rank {rank}"
    return 3 if 3 in mine else mine[0]


def with_bad_forces(frames, index):
    """Copy of ``frames`` with one NaN force component in structure ``index``."""
    out = [a.copy() for a in frames]
    for a, b in zip(out, frames):
        a.calc = SinglePointCalculator(a, **b.calc.results)
    forces = out[index].get_forces().copy()
    forces[0, 1] = np.nan
    out[index].calc = SinglePointCalculator(out[index], energy=out[index].get_potential_energy(), forces=forces)
    return out


def with_copper(frames, index):
    """Copy of ``frames`` where structure ``index`` has its second atom turned into Cu."""
    out = [a.copy() for a in frames]
    for a, b in zip(out, frames):
        a.calc = SinglePointCalculator(a, **b.calc.results)
    atoms = out[index]
    atoms.symbols[1] = "Cu"
    out[index] = _label(atoms)
    return out


# ---- running pargap-fit --------------------------------------------------------------------------

def run_serial(capsys, args):
    """pargap-fit in this process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = fit_main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err




def run_mpi(args, cwd, n=2, timeout=MPI_TIMEOUT):
    """``mpirun -n n pargap-fit args`` -> (exit code, stdout, stderr); a timeout fails the test."""
    result = run_job(["mpirun", "-n", str(n), "pargap-fit", *args], cwd=cwd, timeout=timeout)
    return result.returncode, result.stdout, result.stderr


def run(mode, capsys, tmp_path, args):
    if mode == "serial":
        return run_serial(capsys, args)
    return run_mpi(args, cwd=tmp_path)


def gapfit_args(at_file, gp_file, *extra):
    return [f"at_file={at_file}", GAP, SIGMA, f"gp_file={gp_file}", *extra]


def assert_failed_cleanly(mode, rc, err, gp_file, *, file=None, structure=None, key=None, words=()):
    """Non-zero exit, one message naming file/structure/key, no potential, no temporary files."""
    assert rc != 0, f"expected a failure, got exit code {rc}; stderr:\n{err}"
    assert "Traceback" not in err, f"an internal error instead of a clear message:\n{err}"
    messages = [line for line in err.splitlines() if line.startswith("pargap: error:")]
    assert len(messages) == 1, f"expected exactly one error message ({mode}), got:\n{err}"
    message = messages[0]
    if file is not None:
        assert str(file) in message, f"message does not name the file {file}: {message}"
    if structure is not None:
        assert re.search(rf"\bstructure {structure}\b", message), f"message does not name structure {structure}: {message}"
        others = {int(m) for m in re.findall(r"\bstructure (\d+)", message)}
        assert others == {structure}, f"message names other structures {others}: {message}"
    if key is not None:
        assert f"'{key}'" in message, f"message does not name the key '{key}': {message}"
    for word in words:
        assert word in message, f"message does not mention {word!r}: {message}"
    gp_file = Path(gp_file)
    assert not gp_file.exists(), f"{gp_file} was written although the fit failed"
    stray = sorted(p.name for p in gp_file.parent.glob(".pargap-*"))
    assert not stray, f"temporary files left in {gp_file.parent}: {stray}"
    return message


MODES = ["serial", "mpirun"]


# ---- (1) a missing observation key ------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_missing_energy_key(mode, capsys, tmp_path):
    """energy_parameter_name=dft_energy while the file has only 'energy': nothing to fit in any structure."""
    at_file = write_frames(tmp_path / "train.xyz", make_frames(forces=False))
    assert "dft_energy" not in at_file.read_text()
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path,
                     gapfit_args(at_file, gp_file, "energy_parameter_name=dft_energy", "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file, structure=0, key="dft_energy")


# ---- (2) NaN in the forces ---------------------------------------------------------------------------

@pytest.mark.parametrize("owner", [1, 0], ids=["on-rank1", "on-rank0"])
@pytest.mark.parametrize("mode", MODES)
def test_nan_in_forces(mode, owner, capsys, tmp_path):
    frames = make_frames()
    bad = structure_on_rank(frames, owner)
    if owner == 1:
        assert bad == 3  # the partition puts structure 3 on rank 1 for this data
    at_file = write_frames(tmp_path / "train.xyz", with_bad_forces(frames, bad))
    assert "nan" in at_file.read_text().lower()
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file, structure=bad, key="forces", words=("NaN",))


# ---- (3) a species without e0 ---------------------------------------------------------------------------

@pytest.mark.parametrize("e0", ["e0={Ar:0.0}", "e0_method=isolated"], ids=["e0-dict", "isolated"])
@pytest.mark.parametrize("owner", [1, 0], ids=["on-rank1", "on-rank0"])
@pytest.mark.parametrize("mode", MODES)
def test_unknown_species(mode, owner, e0, capsys, tmp_path):
    """One structure contains Cu; e0 is given for Ar only, or there is no isolated Cu atom."""
    frames = make_frames()
    bad = structure_on_rank(frames, owner)
    at_file = write_frames(tmp_path / "train.xyz", with_copper(frames, bad))
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path, gapfit_args(at_file, gp_file, e0))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file, structure=bad, key="e0", words=("Cu",))


def test_unknown_species_fits_with_isolated_atom(capsys, tmp_path):
    """Control for the case above: the same data plus an isolated Cu atom fits (so the failure is
    about the missing e0, not about Cu itself)."""
    frames = make_frames()
    frames = with_copper(frames, structure_on_rank(frames, 1))
    frames.append(_label(Atoms("Cu", positions=[[0.0, 0.0, 0.0]], pbc=False)))
    frames.append(_label(Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [2.6, 0.0, 0.0]], pbc=False)))  # Cu-Cu pairs
    at_file = write_frames(tmp_path / "train.xyz", frames)
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run_serial(capsys, gapfit_args(at_file, gp_file, "e0_method=isolated"))
    assert rc == 0, err
    assert gp_file.exists()


# ---- (4) an empty file, (5) a truncated file ---------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_empty_file(mode, capsys, tmp_path):
    at_file = tmp_path / "train.xyz"
    at_file.write_text("")
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file, words=("empty",))


@pytest.mark.parametrize("mode", MODES)
def test_blank_file(mode, capsys, tmp_path):
    """Only blank lines: no structures either."""
    at_file = tmp_path / "train.xyz"
    at_file.write_text("\n\n  \n")
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file)


def test_missing_file(capsys, tmp_path):
    at_file = tmp_path / "no_such.xyz"
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run_serial(capsys, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly("serial", rc, err, gp_file, file=at_file)


def _truncate(text, where):
    """Cut the last frame: 'lines' drops its last full atom lines and leaves half a line;
    'last-line' cuts only its very last atom line in the middle."""
    lines = text.splitlines(keepends=True)
    if where == "lines":
        return "".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2]
    return "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]


@pytest.mark.parametrize("where", ["lines", "last-line"])
@pytest.mark.parametrize("mode", MODES)
def test_truncated_file(mode, where, capsys, tmp_path):
    frames = make_frames()
    at_file = write_frames(tmp_path / "train.xyz", frames)
    at_file.write_text(_truncate(at_file.read_text(), where))
    last = len(frames) - 1
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run(mode, capsys, tmp_path, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, file=at_file, structure=last)


def _miscount(text, index, delta):
    """Change the atom count line of frame ``index`` by ``delta`` (the frame itself is unchanged)."""
    lines = text.splitlines(keepends=True)
    k, frame = 0, 0
    while frame < index:
        k += int(lines[k]) + 2
        frame += 1
    lines[k] = f"{int(lines[k]) + delta}\n"
    return "".join(lines)


@pytest.mark.parametrize("delta", [1, -1], ids=["count-too-large", "count-too-small"])
def test_wrong_atom_count(delta, capsys, tmp_path):
    """Structure 1 declares one atom more (or fewer) than it has. The error must point at
    structure 1, whose count line is wrong, not only at structure 2 where the line scan derails."""
    frames = make_frames()
    at_file = write_frames(tmp_path / "train.xyz", frames)
    at_file.write_text(_miscount(at_file.read_text(), 1, delta))
    gp_file = tmp_path / "pot.h5"
    rc, _, err = run_serial(capsys, gapfit_args(at_file, gp_file, "e0=0.0"))
    assert rc == 1, err
    message = assert_failed_cleanly("serial", rc, err, gp_file, file=at_file)
    assert re.search(r"\bstructure 1\b", message), f"the frame with the wrong atom count (1) is not named: {message}"


def test_good_data_fits(capsys, tmp_path):
    """Control: the unmodified data set fits, in this process and under mpirun -n 2."""
    at_file = write_frames(tmp_path / "train.xyz", make_frames())
    rc, _, err = run_serial(capsys, gapfit_args(at_file, tmp_path / "serial.h5", "e0=0.0"))
    assert rc == 0, err
    assert (tmp_path / "serial.h5").exists()
    rc, _, err = run_mpi(gapfit_args(at_file, tmp_path / "mpi.h5", "e0=0.0"), cwd=tmp_path)
    assert rc == 0, err
    assert (tmp_path / "mpi.h5").exists()
    assert not list(tmp_path.glob(".pargap-*"))


# ---- (6) misspelled options --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_misspelled_gapfit_option(mode, capsys, tmp_path):
    at_file = write_frames(tmp_path / "train.xyz", make_frames())
    gp_file = tmp_path / "pot.h5"
    args = [f"at_file={at_file}", GAP, "defualt_sigma={0.01 0.1 0.1 0.0}", "e0=0.0", f"gp_file={gp_file}"]
    rc, _, err = run(mode, capsys, tmp_path, args)
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, key="defualt_sigma", words=("default_sigma",))


def _toml(at_file, gp_file, gap_extra="", top_extra=""):
    return (f'at_file = "{at_file}"\ngp_file = "{gp_file}"\ndefault_sigma = [0.01, 0.1, 0.1, 0.0]\n'
            f"e0 = 0.0\n{top_extra}\n{GAP_TOML}{gap_extra}\n")


@pytest.mark.parametrize("mode", MODES)
def test_misspelled_toml_gap_key(mode, capsys, tmp_path):
    at_file = write_frames(tmp_path / "train.xyz", make_frames())
    gp_file = tmp_path / "pot.h5"
    settings = tmp_path / "fit.toml"
    settings.write_text(_toml(at_file, gp_file).replace("n_sparse = 10", "n_sprase = 10"))
    rc, _, err = run(mode, capsys, tmp_path, [settings])
    assert rc == 1, err
    assert_failed_cleanly(mode, rc, err, gp_file, key="n_sprase", words=("n_sparse",))


def test_misspelled_toml_top_key(capsys, tmp_path):
    at_file = write_frames(tmp_path / "train.xyz", make_frames())
    gp_file = tmp_path / "pot.h5"
    settings = tmp_path / "fit.toml"
    settings.write_text(_toml(at_file, gp_file, top_extra="sparse_jiter = 1e-8"))
    rc, _, err = run_serial(capsys, [settings])
    assert rc == 1, err
    assert_failed_cleanly("serial", rc, err, gp_file, key="sparse_jiter", words=("sparse_jitter",))


@pytest.mark.parametrize("override, key, suggestion", [
    ("gap.0.n_sprase=7", "n_sprase", "n_sparse"),
    ("defualt_sigma=[0.01, 0.1, 0.1, 0.0]", "defualt_sigma", "default_sigma"),
])
@pytest.mark.parametrize("form", ["toml", "gapfit"])
def test_misspelled_set_key(form, override, key, suggestion, capsys, tmp_path):
    at_file = write_frames(tmp_path / "train.xyz", make_frames())
    gp_file = tmp_path / "pot.h5"
    if form == "toml":
        settings = tmp_path / "fit.toml"
        settings.write_text(_toml(at_file, gp_file))
        args = [settings, "--set", override]
    else:
        args = gapfit_args(at_file, gp_file, "e0=0.0") + ["--set", override]
    rc, _, err = run_serial(capsys, args)
    assert rc == 1, err
    assert_failed_cleanly("serial", rc, err, gp_file, key=key, words=(suggestion,))


def test_misspelled_set_key_print_config(capsys, tmp_path):
    """--print-config validates too: a misspelled --set key is an error, not silently printed."""
    at_file = tmp_path / "train.xyz"
    gp_file = tmp_path / "pot.h5"
    settings = tmp_path / "fit.toml"
    settings.write_text(_toml(at_file, gp_file))
    rc, out, err = run_serial(capsys, [settings, "--set", "gap.0.n_sprase=7", "--print-config"])
    assert rc == 1, err
    assert "n_sprase" in err and "n_sparse" in err, err
    assert "[[gap]]" not in out
