"""The Stillinger-Weber calculator against its own energy (finite differences), SW's known diamond
numbers and the symmetry of the diamond Hessian."""

import numpy as np
import pytest

from pargap.data.hessian import finite_difference_hessian, hessian_data
from pargap.baselines.stillinger_weber import StillingerWeber, diamond_cell, diamond_lattice_constant


def rattled(seed=0, amplitude=0.15, strain=0.03, repeat=1):
    """A diamond cell with random displacements (A) and a random triclinic strain."""
    rng = np.random.default_rng(seed)
    atoms = diamond_cell(repeat=repeat)
    atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.uniform(-strain, strain, (3, 3))), scale_atoms=True)
    atoms.calc = StillingerWeber()
    return atoms


@pytest.mark.parametrize("seed", [0, 1])
def test_forces_are_minus_the_energy_gradient(seed):
    atoms = rattled(seed)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1.0  # far from the minimum: three-body terms all active
    numeric = atoms.calc.calculate_numerical_forces(atoms, d=1e-5)
    np.testing.assert_allclose(forces, numeric, atol=1e-7)
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-10)


def test_stress_matches_finite_strain():
    atoms = rattled(2)
    stress = atoms.get_stress()
    assert np.abs(stress).max() > 1e-2
    np.testing.assert_allclose(stress, atoms.calc.calculate_numerical_stress(atoms, d=1e-6), atol=1e-9)


def test_per_atom_energies_sum_to_the_total_and_translation_invariance():
    atoms = rattled(3)
    energy = atoms.get_potential_energy()
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-12)
    moved = atoms.copy()
    moved.positions += [0.3, -1.1, 2.0]
    moved.calc = StillingerWeber()
    assert moved.get_potential_energy() == pytest.approx(energy, abs=1e-10)


def test_isolated_dimer_is_the_pair_function():
    """Two atoms in vacuum: E = phi2(r) only (no triplet), zero beyond a sigma = 3.77118 A."""
    from ase import Atoms

    calc = StillingerWeber()
    eps, sigma, A, B = 2.1683, 2.0951, 7.049556277, 0.6022245584
    for r in (2.0, 2.35, 3.0, 3.7):
        dimer = Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]], calculator=calc)
        phi2 = A * eps * (B * (sigma / r) ** 4 - 1.0) * np.exp(sigma / (r - 1.8 * sigma))
        assert dimer.get_potential_energy() == pytest.approx(phi2, rel=1e-12)
    assert Atoms("Si2", positions=[[0, 0, 0], [3.772, 0, 0]], calculator=calc).get_potential_energy() == 0.0


def test_diamond_cohesive_energy_and_zero_stress_at_the_minimum():
    """SW's diamond: -4.3366 eV/atom at a = 5.431 A, no force and no stress there."""
    atoms = diamond_cell(a=5.431)
    atoms.calc = StillingerWeber()
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-4.3366, abs=1e-6)
    assert diamond_lattice_constant() == pytest.approx(5.431, abs=1e-3)
    minimum = diamond_cell()
    minimum.calc = StillingerWeber()
    assert minimum.get_potential_energy() / 8 == pytest.approx(-2 * 2.1683, abs=1e-9)
    np.testing.assert_allclose(minimum.get_forces(), 0.0, atol=1e-12)
    np.testing.assert_allclose(minimum.get_stress(), 0.0, atol=1e-9)
    # a larger or smaller cell is higher in energy: the lattice constant is the minimum
    for a in (5.40, 5.46):
        strained = diamond_cell(a=a)
        strained.calc = StillingerWeber()
        assert strained.get_potential_energy() > minimum.get_potential_energy() + 1e-3


def test_hessian_of_the_8_atom_cell_has_3_zero_and_21_positive_eigenvalues():
    atoms = diamond_cell()
    H = finite_difference_hessian(atoms, StillingerWeber(), delta=1e-3)
    values = np.linalg.eigvalsh(H)
    assert np.abs(values[:3]).max() < 1e-6
    assert values[3] > 1.0 and len(values[3:]) == 21
    # the zone-centre optical mode (3-fold, the highest): atoms of the two fcc sublattices move
    # against each other; its eigenvalue is the e.H.e of that displacement pattern
    optical = np.zeros((8, 3))
    optical[:, 0] = [1, -1, 1, -1, 1, -1, 1, -1]  # ase's cubic diamond alternates the sublattices
    e = optical.ravel() / np.linalg.norm(optical)
    assert e @ H @ e == pytest.approx(values[-1], rel=1e-6)
    labelled = hessian_data(atoms, StillingerWeber())
    assert labelled.info["n_hessian"] == 21
    np.testing.assert_allclose(sorted(labelled.info[f"hessian{k}"] for k in range(1, 22)), values[3:], rtol=1e-6)


def test_directional_curvature_is_the_eigenvalue_to_order_delta_squared():
    """The functional of a Hessian row, applied to SW along each of its eigenvectors at the
    minimum, gives the eigenvalue, with an error that falls as D^2 (what a baseline's Hessian
    contribution is computed with)."""
    from pargap.data.hessian import directional_curvature

    labelled = hessian_data(diamond_cell(), StillingerWeber(), delta=1e-3)
    for k in (1, 7, 13, 19):
        e, value = labelled.arrays[f"hessian{k}"], labelled.info[f"hessian{k}"]
        errors = [abs(directional_curvature(diamond_cell(), StillingerWeber(), e, D) - value) for D in (0.04, 0.02)]
        assert errors[1] < 2e-3 * value
        assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)


def test_other_elements_are_refused():
    from ase import Atoms

    from pargap.errors import InputError

    with pytest.raises(InputError, match="only Si"):
        Atoms("SiC", positions=[[0, 0, 0], [2, 0, 0]], calculator=StillingerWeber()).get_potential_energy()
