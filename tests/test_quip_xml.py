"""QUIP's GAP XML against QUIP's own reader: pargap-written XML evaluated by quippy equals
GAPCalculator on the HDF5 file, and gap_fit-written XML evaluated by pargap equals quippy, to 1e-8
relative (energies, forces, virials), for each descriptor type and a 2-species 2b + 3b + SOAP model.

quippy and gap_fit are the PyPI wheel quippy-ase in a side venv (bench/.venv, made by bench/setup
on first use and reused after), run in subprocesses (tests/quippy_eval.py); without network on a
fresh machine these tests fail with bench/setup's message, they do not skip.
"""

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones

from pargap.baselines.core_potential import CorePotential
from pargap.descriptors import make_descriptor
from pargap.fitting.fit import fit
from pargap.gp.kernels import DotProduct, SquaredExponential
from pargap.gp.model import Model
from pargap.parallel import SerialComm
from pargap.potential.calculator import GAPCalculator
from pargap.potential.potential import Potential
from pargap.progress import Log
from pargap.settings.config import parse_gapfit_args, settings_from_dict

ROOT = Path(__file__).resolve().parents[1]
QUIPPY_EVAL = Path(__file__).resolve().parent / "quippy_eval.py"
RTOL = 1e-8

GAP = ("gap={distance_2b cutoff=4.0 cutoff_transition_width=0.8 covariance_type=ard_se delta=0.5 theta_uniform=1.0 "
       "n_sparse=8 sparse_method=uniform : angle_3b cutoff=3.2 cutoff_transition_width=0.6 covariance_type=ard_se "
       "delta=0.3 theta_uniform=1.2 n_sparse=10 sparse_method=random : soap cutoff=3.5 l_max=3 n_max=3 "
       "atom_sigma=0.5 covariance_type=dot_product zeta=2 delta=0.2 n_sparse=12 sparse_method=random}")
COMMON = "default_sigma={0.01 0.2 0.2 0.0} e0={Si:-1.5:C:-2.5} sparse_jitter=1.0e-6 rnd_seed=4"

GLUE = """<Glue_params n_types="1">
  <per_type_data atomic_num="14" type="1">
    <density num_points="4" density_y1="-0.5" density_yn="0.0">
      <point a="1.5" rho="0.30"/> <point a="2.2" rho="0.12"/> <point a="2.9" rho="0.03"/> <point a="3.6" rho="0.0"/>
    </density>
    <potential_density num_points="4">
      <point rho="0.0" E="0.0"/> <point rho="0.3" E="-0.4"/> <point rho="0.8" E="-0.7"/> <point rho="1.5" E="-0.6"/>
    </potential_density>
  </per_type_data>
  <per_pair_data type1="1" type2="1">
    <potential_pair num_points="5" y1="-30.0" yn="0.0">
      <point r="1.6" E="2.0"/> <point r="2.0" E="0.3"/> <point r="2.4" E="-0.2"/> <point r="3.0" E="-0.05"/>
      <point r="3.5" E="0.0"/>
    </potential_pair>
  </per_pair_data>
</Glue_params>
"""


# ---- the side venv with QUIP's reader ------------------------------------------------------------

@pytest.fixture(scope="session")
def quippy_python():
    """bench/.venv's python with quippy-ase (bench/setup: idempotent, a no-op once made)."""
    try:
        proc = subprocess.run([str(ROOT / "bench" / "setup")], capture_output=True, text=True, timeout=1500)
    except subprocess.TimeoutExpired:
        pytest.fail("bench/setup (pip install quippy-ase into bench/.venv) took more than 25 minutes")
    if proc.returncode != 0:
        pytest.fail("bench/setup could not make bench/.venv with quippy-ase from PyPI (network?), which the "
                    f"QUIP XML tests need:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return ROOT / "bench" / ".venv" / "bin" / "python"


def quippy_results(python, xml, structures, tmp_path):
    """quippy's energies, forces, virials of the structures (lists, in order)."""
    xyz, out = tmp_path / "quippy_in.npz", tmp_path / "quippy_out.npz"
    np.savez(xyz, **{f"{key}_{k}": value for k, a in enumerate(structures)
                     for key, value in (("numbers", a.numbers), ("positions", a.positions),
                                        ("cell", a.cell[:]), ("pbc", a.pbc))})
    proc = subprocess.run([str(python), str(QUIPPY_EVAL), str(xml), str(xyz), str(out)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, f"quippy failed on {xml}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = np.load(out)
    return [(float(data[f"energy_{k}"]), data[f"forces_{k}"], data[f"virial_{k}"]) for k in range(len(structures))]


def pargap_results(potential, structures):
    out = []
    for atoms in structures:
        p = Potential.load(potential).predict(atoms) if isinstance(potential, (str, Path)) else potential.predict(atoms)
        out.append((p["energy"], p["forces"], p["virial"]))
    return out


def assert_same(ours, theirs, what):
    for k, ((e1, f1, w1), (e2, f2, w2)) in enumerate(zip(ours, theirs)):
        n = len(f1)
        assert e1 / n == pytest.approx(e2 / n, rel=RTOL, abs=RTOL), f"{what}: energy of structure {k}"
        scale = max(np.abs(f2).max(), 1e-3)
        np.testing.assert_allclose(f1, f2, rtol=RTOL, atol=RTOL * scale, err_msg=f"{what}: forces of structure {k}")
        scale = max(np.abs(w2).max(), 1e-3)
        np.testing.assert_allclose(w1, w2, rtol=RTOL, atol=RTOL * scale, err_msg=f"{what}: virial of structure {k}")


# ---- data and fits ---------------------------------------------------------------------------------

def sic_structures(n, seed, rattle=0.12):
    """Rattled, strained zincblende SiC cells (8 and 16 atoms, some with Si/C swapped), periodic."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("SiC", "zincblende", a=4.36 * rng.uniform(0.97, 1.04), cubic=True)
        if k % 2:
            atoms = atoms.repeat((2, 1, 1))
        if k % 3 == 1:
            atoms.numbers[rng.choice(len(atoms), 2, replace=False)] = [14, 6]
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    return frames


def labelled(frames):
    """Lennard-Jones labels (any species alike): the fits need numbers, not physics."""
    for atoms in frames:
        atoms.calc = LennardJones(sigma=1.7, epsilon=0.3, rc=4.5, smooth=True)
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.info["virial"] = -atoms.get_stress(voigt=False) * atoms.get_volume()
        atoms.calc = None
    return frames


@pytest.fixture(scope="module")
def training_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "train.xyz"
    ase.io.write(path, labelled(sic_structures(8, seed=1)), format="extxyz")
    return path


@pytest.fixture(scope="module")
def pargap_fit(training_file):
    """pargap's 2-species 2b + 3b + SOAP fit (models after species expansion: 3 + 6 + 2)."""
    data = parse_gapfit_args([f"at_file={training_file}", GAP, *COMMON.split(), "gp_file=unused.h5"])
    return fit(settings_from_dict(data), SerialComm(), Log(SerialComm(), quiet=True))


@pytest.fixture(scope="module")
def test_structures():
    return sic_structures(4, seed=7, rattle=0.15)


def variants(potential):
    """The fit, each descriptor type on its own, and variants QUIP must read alike: ard_se with f0,
    dot_product with zeta = 3 (the general contraction; zeta = 2 uses the quadratic form), and a SOAP
    of any centre and neighbour species (Z = 0, no species_Z)."""
    by_type = {name: [m for m in potential.models if m.descriptor.name == name]
               for name in ("distance_2b", "angle_3b", "soap")}
    two = by_type["distance_2b"]
    f0 = [Model(m.descriptor, SquaredExponential(delta=m.kernel.delta, theta=m.kernel.theta, f0=0.07),
                m.sparse_x, m.sparse_weight, m.alpha) for m in two]
    zeta3 = [Model(m.descriptor, DotProduct(delta=m.kernel.delta, zeta=3.0), m.sparse_x, m.sparse_weight, m.alpha)
             for m in by_type["soap"]]
    any_species = make_descriptor("soap", cutoff=3.5, l_max=2, n_max=2, atom_sigma=0.5)  # Z=0, species_Z=[0]
    X = np.concatenate([any_species.compute(a).x for a in sic_structures(2, seed=9)])[:6]
    rng = np.random.default_rng(5)
    anything = Model(any_species, DotProduct(delta=0.3, zeta=2), X, np.ones(6), rng.normal(size=6))
    out = {"2b+3b+soap": potential}
    out |= {name: Potential(models, potential.e0) for name, models in by_type.items()}
    out |= {"2b f0": Potential(f0, potential.e0), "soap zeta=3": Potential(zeta3, potential.e0),
            "soap any species": Potential([anything], potential.e0)}
    return out


# ---- pargap's XML in quippy -----------------------------------------------------------------------

def test_pargap_xml_in_quippy_equals_gapcalculator(quippy_python, pargap_fit, test_structures, tmp_path):
    failures = []
    assert [m.descriptor.name for m in pargap_fit.models] == ["distance_2b"] * 3 + ["angle_3b"] * 6 + ["soap"] * 2
    for name, potential in variants(pargap_fit).items():
        folder = tmp_path / name.replace(" ", "_").replace("=", "")
        potential.save(folder / "gp.h5")
        subprocess.run([sys.executable, "-m", "pargap.cli.convert", str(folder / "gp.h5"), str(folder / "gp.xml")],
                       check=True, capture_output=True)
        ours = []
        for atoms in test_structures:
            atoms = atoms.copy()
            atoms.calc = GAPCalculator(str(folder / "gp.h5"))
            ours.append((atoms.get_potential_energy(), atoms.get_forces(),
                         -atoms.get_stress(voigt=False) * atoms.get_volume()))
        try:
            assert_same(ours, quippy_results(quippy_python, folder / "gp.xml", test_structures, tmp_path), name)
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[:8])
    assert not failures, failures


PAIR_TABLE = "pair Si Si\n1.5 1.0\n2.0 0.3\n2.5 0.1\n3.5 0.0\npair Si C\n1.2 2.0\n1.9 -0.2\n3.0 0.0\n"


@pytest.mark.parametrize("kind, text", [("glue", GLUE), ("pair_table", PAIR_TABLE)])
def test_core_written_as_quip_sum(quippy_python, pargap_fit, test_structures, tmp_path, kind, text):
    """A core potential becomes QUIP's Sum of IP Glue (a pair table: a glue without density) and
    IP GAP; quippy then adds the same baseline."""
    core = CorePotential.from_text(kind, text, "IP Glue" if kind == "glue" else "pair_table")
    models = [m for m in pargap_fit.models if m.descriptor.name == "distance_2b"]
    potential = Potential(models, pargap_fit.e0, core=core)
    potential.save(tmp_path / "core.xml")
    assert 'init_args="Sum init_args_pot1={IP Glue} init_args_pot2={IP GAP' in (tmp_path / "core.xml").read_text()
    structures = test_structures
    if kind == "glue":  # the glue file knows Si only
        structures = [bulk("Si", "diamond", a=5.43, cubic=True)]
        structures[0].rattle(0.15, seed=2)
    assert_same(pargap_results(potential, structures), quippy_results(quippy_python, tmp_path / "core.xml",
                                                                         structures, tmp_path), f"{kind} core")
    again = Potential.load(tmp_path / "core.xml")
    assert_same(pargap_results(again, structures), pargap_results(potential, structures), f"{kind} core read back")


# ---- gap_fit's XML in pargap ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gap_fit_xml(quippy_python, training_file, tmp_path_factory):
    """gap_fit (the wheel's) on the same data and model: its GAP XML and sparseX files."""
    folder = tmp_path_factory.mktemp("gap_fit")
    gap_fit = next(quippy_python.parent.parent.glob("lib/python3*/site-packages/quippy/gap_fit"))
    line = [f"at_file={training_file}", GAP, *COMMON.split(), "energy_parameter_name=energy",
            "force_parameter_name=forces", "virial_parameter_name=virial", "gp_file=gp.xml"]
    proc = subprocess.run([str(gap_fit), *line], cwd=folder, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    return folder / "gp.xml"


def test_gap_fit_xml_in_gapcalculator_equals_quippy(quippy_python, gap_fit_xml, test_structures, tmp_path):
    potential = Potential.load(gap_fit_xml)
    assert [m.descriptor.name for m in potential.models] == ["distance_2b"] * 3 + ["angle_3b"] * 6 + ["soap"] * 2
    assert potential.e0 == {14: -1.5, 6: -2.5}
    ours = []
    for atoms in test_structures:
        atoms = atoms.copy()
        atoms.calc = GAPCalculator(str(gap_fit_xml))
        ours.append((atoms.get_potential_energy(), atoms.get_forces(),
                     -atoms.get_stress(voigt=False) * atoms.get_volume()))
    assert_same(ours, quippy_results(quippy_python, gap_fit_xml, test_structures, tmp_path), "gap_fit XML")


def test_pargap_eval_reads_gap_fit_xml(gap_fit_xml, training_file):
    """pargap-eval takes gap_fit's key names from the XML's command line."""
    proc = subprocess.run([sys.executable, "-m", "pargap.cli.eval", str(gap_fit_xml), str(training_file), "--json"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PARGAP_MPI="0"))
    assert proc.returncode == 0, proc.stderr
    assert '"energy"' in proc.stdout


def test_gap_fit_xml_with_sparse_points_inside(quippy_python, training_file, test_structures, tmp_path):
    """gap_fit's sparse_separate_file=F puts the sparse points inside the <sparseX> elements."""
    gap_fit = next(quippy_python.parent.parent.glob("lib/python3*/site-packages/quippy/gap_fit"))
    line = [f"at_file={training_file}", "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=0.5 "
            "theta_uniform=1.0 n_sparse=6 sparse_method=uniform : soap cutoff=3.0 l_max=2 n_max=2 atom_sigma=0.5 "
            "covariance_type=dot_product zeta=2 delta=0.2 n_sparse=5 sparse_method=random}", *COMMON.split(),
            "force_parameter_name=forces", "sparse_separate_file=F", "gp_file=gp.xml"]
    proc = subprocess.run([str(gap_fit), *line], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not list(tmp_path.glob("gp.xml.sparseX.*"))
    assert_same(pargap_results(tmp_path / "gp.xml", test_structures),
                quippy_results(quippy_python, tmp_path / "gp.xml", test_structures, tmp_path), "inline sparseX")
