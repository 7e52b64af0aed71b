"""The ASE calculator, as ASE's own calculator tests check one: forces are minus the gradient of the
energy, stress matches finite strain, forces sum to zero, per-atom energies sum to the total, and a
potential read back from HDF5 predicts the same numbers."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import random_model
from pargap import GAPCalculator
from pargap.descriptors.angle_3b import Angle3b
from pargap.gp.kernels import SquaredExponential
from pargap.gp.model import Model
from pargap.potential.potential import Potential


def two_species_potential(rng):
    """distance_2b for each species pair plus an angle_3b (Si centre, any neighbours), summed."""
    models = [random_model(rng, 14, 14), random_model(rng, 14, 6), random_model(rng, 6, 6, cutoff=3.5)]
    triplet = Angle3b(cutoff=3.2, cutoff_transition_width=0.8, Z=14)
    sparse = np.column_stack([rng.uniform(3, 6, 10), rng.uniform(0, 1, 10), rng.uniform(2, 5, 10)])
    models.append(Model(triplet, SquaredExponential(delta=0.5, theta=[0.6, 0.4, 0.6]), sparse,
                        rng.uniform(0.3, 1.0, 10), rng.normal(0, 1, 10)))
    return Potential(models, {14: -1.5, 6: -2.25})


def structures(rng):
    crystal = bulk("SiC", "zincblende", a=4.36) * (2, 1, 1)
    crystal.rattle(0.08, seed=7)
    crystal.set_cell(crystal.cell[:] @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
    molecule = Atoms("Si2C3", positions=rng.uniform(0, 3.2, (5, 3)))
    return {"crystal": crystal, "cluster": molecule}


@pytest.mark.parametrize("kind", ["crystal", "cluster"])
def test_forces_are_minus_energy_gradient(kind, rng):
    pot = two_species_potential(rng)
    atoms = structures(rng)[kind]
    atoms.calc = GAPCalculator(pot)
    forces = atoms.get_forces()
    h = 1e-5
    numeric = np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            e = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, c] += sign * h
                moved.calc = GAPCalculator(pot)
                e.append(moved.get_potential_energy())
            numeric[a, c] = -(e[0] - e[1]) / (2 * h)
    assert np.abs(forces).max() > 1e-2  # the test is not vacuous
    np.testing.assert_allclose(forces, numeric, atol=1e-7 * max(1.0, np.abs(forces).max()))
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-10)


def test_stress_matches_finite_strain(rng):
    pot = two_species_potential(rng)
    atoms = structures(rng)["crystal"]
    atoms.calc = GAPCalculator(pot)
    stress = atoms.get_stress(voigt=False)
    h = 1e-6
    numeric = np.zeros((3, 3))
    V = atoms.get_volume()
    for i in range(3):
        for j in range(3):
            e = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[i, j] += sign * h
                moved = atoms.copy()
                moved.set_cell(atoms.cell[:] @ eps, scale_atoms=True)
                moved.calc = GAPCalculator(pot)
                e.append(moved.get_potential_energy())
            numeric[i, j] = (e[0] - e[1]) / (2 * h) / V
    numeric = 0.5 * (numeric + numeric.T)
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, numeric, atol=1e-7)


def test_energies_sum_and_baseline(rng):
    pot = two_species_potential(rng)
    atoms = structures(rng)["crystal"]
    atoms.calc = GAPCalculator(pot)
    energies = atoms.get_potential_energies()
    np.testing.assert_allclose(energies.sum(), atoms.get_potential_energy(), rtol=1e-12)
    # an isolated atom carries exactly its e0
    lone = Atoms("C", positions=[[0, 0, 0]])
    lone.calc = GAPCalculator(pot)
    assert lone.get_potential_energy() == pytest.approx(-2.25, abs=1e-14)


def test_hdf5_roundtrip_predicts_the_same(rng, tmp_path):
    pot = two_species_potential(rng)
    path = tmp_path / "pot.h5"
    pot.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["pot.h5"]  # no temporary file left behind
    loaded = Potential.load(path)
    atoms = structures(rng)["crystal"]
    a, b = pot.predict(atoms), loaded.predict(atoms)
    assert a["energy"] == b["energy"]
    np.testing.assert_array_equal(a["forces"], b["forces"])
    np.testing.assert_array_equal(a["virial"], b["virial"])


def test_unknown_species_is_an_error(rng):
    from pargap.errors import InputError

    pot = two_species_potential(rng)
    atoms = Atoms("SiN", positions=[[0, 0, 0], [1.8, 0, 0]])
    atoms.calc = GAPCalculator(pot)
    with pytest.raises(InputError, match="Z=\\[7\\]"):
        atoms.get_potential_energy()
