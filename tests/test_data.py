"""gap_fit's data conventions: keys, stress, noise and e0 (GAPFIT_MATH.md sections 0 and 6)."""

import math

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from pargap.data.frames import extract, to_virial
from pargap.errors import InputError
from pargap.fitting.e0 import is_isolated_atom
from pargap.fitting.e0 import compute_e0
from pargap.parallel import SerialComm
from pargap.settings.config import settings_from_dict

GAP = [{"descriptor": "distance_2b", "cutoff": 4.0, "delta": 1.0, "theta_uniform": 0.5, "n_sparse": 5}]


def settings(**kw):
    return settings_from_dict({"at_file": "x.xyz", "default_sigma": [0.01, 0.2, 0.5, 0.0], "gap": GAP} | kw)


def crystal():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.info["energy"] = -10.0
    atoms.arrays["forces"] = np.arange(6.0).reshape(2, 3)
    return atoms


def test_stress_becomes_virial_in_voigt_and_full_form():
    s = np.array([1.0, 2.0, 3.0, 0.4, 0.5, 0.6])  # xx yy zz yz xz xy
    full = np.array([[1.0, 0.6, 0.5], [0.6, 2.0, 0.4], [0.5, 0.4, 3.0]])
    np.testing.assert_allclose(to_virial(s, 10.0), -10.0 * full)
    np.testing.assert_allclose(to_virial(full.ravel(), 10.0), -10.0 * full)
    atoms = crystal()
    atoms.info["stress"] = s
    st = extract(atoms, 0, settings(), "x.xyz")
    np.testing.assert_allclose(st.virial, -atoms.get_volume() * full)


def test_virial_key_wins_over_stress_and_is_symmetrised():
    atoms = crystal()
    atoms.info["stress"] = np.ones(6)
    atoms.info["virial"] = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    st = extract(atoms, 0, settings(), "x.xyz")
    np.testing.assert_allclose(st.virial, [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_keys_are_case_insensitive():
    atoms = crystal()
    del atoms.info["energy"]
    atoms.info["DFT_energy"] = -3.0
    atoms.arrays["DFT_force"] = atoms.arrays.pop("forces")
    st = extract(atoms, 0, settings(energy_parameter_name="dft_energy", force_parameter_name="dft_force"), "x.xyz")
    assert st.energy == -3.0 and st.forces is not None


def test_sigma_defaults_per_atom_scaling_and_config_type():
    atoms = crystal() * (2, 1, 1)
    atoms.arrays["forces"] = np.zeros((4, 3))
    atoms.info["virial"] = np.eye(3)
    st = extract(atoms, 0, settings(), "x.xyz")
    assert st.sigma_energy == pytest.approx(0.01 * math.sqrt(4))
    assert np.all(st.sigma_virial == pytest.approx(0.5 * math.sqrt(4)))
    assert np.all(st.sigma_forces == 0.2)
    st = extract(atoms, 0, settings(sigma_per_atom=False), "x.xyz")
    assert st.sigma_energy == 0.01
    atoms.info["config_type"] = "liq"
    st = extract(atoms, 0, settings(config_type_sigma={"liq": [0.1, 0.3, 0.7, 0.0]}), "x.xyz")
    assert st.sigma_energy == pytest.approx(0.2) and np.all(st.sigma_forces == 0.3)


def test_per_structure_and_per_atom_sigma_overrides_are_absolute():
    atoms = crystal()
    atoms.info["energy_sigma"] = 0.05
    atoms.info["force_sigma"] = 0.4
    atoms.arrays["force_atom_sigma"] = np.array([0.1, 0.9])
    st = extract(atoms, 0, settings(), "x.xyz")
    assert st.sigma_energy == 0.05
    np.testing.assert_allclose(st.sigma_forces, [[0.1] * 3, [0.9] * 3])


def test_zero_sigma_is_an_error():
    with pytest.raises(InputError, match="force sigma is zero"):
        extract(crystal(), 4, settings(default_sigma=[0.01, 0.0, 0.5, 0.0]), "x.xyz")


def test_isolated_atom_detection():
    assert is_isolated_atom(Atoms("Si", positions=[[0, 0, 0]]), 5.0)
    assert is_isolated_atom(Atoms("Si", cell=[20, 20, 20], pbc=True), 5.0)
    assert not is_isolated_atom(Atoms("Si", cell=[3, 3, 3], pbc=True), 5.0)  # a 1-atom bulk
    assert not is_isolated_atom(crystal(), 5.0)


def _structures(s, frames):
    return [extract(a, i, s, "x.xyz") for i, a in enumerate(frames)]


def test_e0_isolated_average_explicit_and_offset():
    lone = Atoms("Si", positions=[[0, 0, 0]])
    lone.info["energy"] = -158.5
    frames = [crystal(), lone]
    comm = SerialComm()
    s = settings(e0_offset=2.0)
    assert compute_e0(comm, s, _structures(s, frames), [14]) == {14: pytest.approx(-156.5)}
    s = settings(e0_method="average")
    # gap_fit's e0_avg_from_xyz: the mean over energy frames of E/N, not total E over total N
    assert compute_e0(comm, s, _structures(s, frames), [14]) == {14: pytest.approx((-10.0 / 2 - 158.5) / 2)}
    s = settings(e0={"Si": -1.25})
    assert compute_e0(comm, s, _structures(s, frames), [14]) == {14: -1.25}
    s = settings()
    with pytest.raises(InputError, match="no isolated-atom structure"):
        compute_e0(comm, s, _structures(s, [crystal()]), [14])


def test_any_ase_format_is_read(tmp_path):
    """A non-XYZ file goes through ase.io.read (here ASE's JSON database format)."""
    from pargap.data.frames import read_frames, scan_frames

    frames = [crystal(), crystal() * (2, 1, 1)]
    for a in frames:
        from ase.calculators.singlepoint import SinglePointCalculator

        a.calc = SinglePointCalculator(a, energy=-1.0, forces=np.zeros((len(a), 3)))
    ase.io.write(tmp_path / "db.json", frames)
    index = scan_frames(str(tmp_path / "db.json"))
    assert index.n_atoms == (2, 4)
    st = extract(read_frames(index, [1])[0], 1, settings(), "db.json")
    assert st.energy == -1.0 and st.forces.shape == (4, 3)


def test_a_non_xyz_file_is_read_one_frame_at_a_time(tmp_path, monkeypatch):
    """Every rank parses the file frame by frame (ase.io.iread) and keeps only its own frames:
    ase.io.read of the whole file (all frames in memory on every rank) is never called."""
    import ase.io

    from pargap.data.frames import read_frames, scan_frames

    frames = [crystal() * (k + 1, 1, 1) for k in range(5)]
    ase.io.write(tmp_path / "db.json", frames)
    monkeypatch.setattr(ase.io, "read", lambda *a, **k: pytest.fail("the whole file was read"))
    index = scan_frames(str(tmp_path / "db.json"))
    assert index.n_atoms == (2, 4, 6, 8, 10)
    assert [len(a) for a in read_frames(index, [3, 1])] == [8, 4]


def test_force_mask_and_virial_component_sigma():
    atoms = crystal()
    atoms.arrays["force_mask"] = np.array([True, False])
    atoms.info["virial"] = np.eye(3)
    atoms.info["virial_component_sigma"] = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    st = extract(atoms, 0, settings(), "x.xyz")
    assert np.all(np.isinf(st.sigma_forces[0])) and np.all(st.sigma_forces[1] == 0.2)  # row weight 0
    np.testing.assert_allclose(st.sigma_virial, [[1, 3, 5], [3, 5, 7], [5, 7, 9]])


def test_hessian_keys_as_gap_fit():
    atoms = crystal()
    atoms.info["n_hessian"] = 1
    with pytest.raises(InputError, match="structure 7.*hessian1"):
        extract(atoms, 7, settings(), "x.xyz")  # eigenvalue and eigenvector missing
    atoms.info["hessian1"] = 4.5
    atoms.arrays["hessian1"] = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, -4.0]])
    with pytest.raises(InputError, match="hessian sigma is zero"):
        extract(atoms, 7, settings(), "x.xyz")  # default_sigma's fourth value is 0
    st = extract(atoms, 7, settings(default_sigma=[0.01, 0.2, 0.5, 0.05]), "x.xyz")
    (value, vector), = st.hessian
    assert value == 4.5 and st.sigma_hessian == 0.05  # not scaled by the number of atoms
    np.testing.assert_allclose(vector, [[0, 0, 0.6], [0, 0, -0.8]])
