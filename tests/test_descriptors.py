"""distance_2b and the cutoff function: values, species selection, gradients by finite differences."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from conftest import displaced, strained
from pargap.descriptors import Distance2b, cutoff_function


def test_cutoff_function_limits_and_derivative():
    r = np.linspace(0.0, 6.0, 6001)
    fc, dfc = cutoff_function(r, 5.0, 1.0)
    assert np.all(fc[r <= 4.0] == 1.0) and np.all(fc[r > 5.0] == 0.0)
    assert np.all(np.diff(fc) <= 0)
    h = 1e-6
    rr = np.array([4.1, 4.5, 4.93])
    numeric = (cutoff_function(rr + h, 5.0, 1.0)[0] - cutoff_function(rr - h, 5.0, 1.0)[0]) / (2 * h)
    np.testing.assert_allclose(cutoff_function(rr, 5.0, 1.0)[1], numeric, rtol=1e-7)


def test_pairs_are_listed_twice_with_cutoff_weights():
    atoms = Atoms("Ar3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 4.6, 0]])
    d = Distance2b(cutoff=5.0, cutoff_transition_width=1.0).compute(atoms)
    # pairs 0-1 (2.5), 0-2 (4.6), 1-2 (sqrt(2.5^2+4.6^2) = 5.235 > 5): two pairs, both directions
    assert sorted(d.x[:, 0].round(6)) == [2.5, 2.5, 4.6, 4.6]
    assert sorted(d.centre.tolist()) == [0, 0, 1, 2]
    np.testing.assert_allclose(sorted(d.weight), sorted(cutoff_function(d.x[:, 0], 5.0, 1.0)[0]))


def test_species_pair_selection():
    atoms = Atoms("SiCSi", positions=[[0, 0, 0], [2.0, 0, 0], [0, 2.2, 0]])
    both = Distance2b(cutoff=3.5, Z1=14, Z2=6).compute(atoms)
    same = Distance2b(cutoff=3.5, Z1=14, Z2=14).compute(atoms)
    anyp = Distance2b(cutoff=3.5).compute(atoms)
    assert len(both) == 4 and len(same) == 2 and len(anyp) == 6
    assert set(np.round(same.x[:, 0], 6)) == {2.2}


@pytest.mark.parametrize("periodic", [False, True])
def test_gradients_match_finite_differences(periodic, rng):
    if periodic:
        atoms = bulk("Ar", "fcc", a=4.0) * (2, 1, 1)
    else:
        atoms = Atoms("Ar4", positions=rng.uniform(0, 3.0, (4, 3)))
    atoms.rattle(0.1, seed=3)
    desc = Distance2b(cutoff=4.2, cutoff_transition_width=1.2)
    d = desc.compute(atoms, gradients=True)
    h = 1e-6
    for a in range(len(atoms)):
        for c in range(3):
            shifted = [desc.compute(m) for m in displaced(atoms, a, c, h)]
            # the neighbour enumeration is stable under a tiny displacement
            dx_num = (shifted[0].x - shifted[1].x)[:, 0] / (2 * h)
            dw_num = (shifted[0].weight - shifted[1].weight) / (2 * h)
            mine = d.grad_atom == a
            dx = np.zeros(len(d))
            dw = np.zeros(len(d))
            np.add.at(dx, d.grad_owner[mine], d.dx_dr[mine, c, 0])
            np.add.at(dw, d.grad_owner[mine], d.dw_dr[mine, c])
            np.testing.assert_allclose(dx, dx_num, atol=1e-7)
            np.testing.assert_allclose(dw, dw_num, atol=1e-7)


def test_invariance_under_rotation_translation_permutation(rng):
    atoms = Atoms("Ar5", positions=rng.uniform(0, 3.5, (5, 3)))
    desc = Distance2b(cutoff=4.0)
    ref = np.sort(desc.compute(atoms).x[:, 0])
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), center=(0.3, 0.1, 0.0))
    moved.translate((1.0, -2.0, 0.5))
    moved = moved[rng.permutation(5)]
    np.testing.assert_allclose(np.sort(desc.compute(moved).x[:, 0]), ref, atol=1e-12)


def test_strain_derivative_matches_finite_differences():
    """sum_g dx/dr_g,k R_g,l (slot positions R, self-images included) equals dx/d eps_kl for a
    homogeneous strain of a cell smaller than twice the cutoff."""
    atoms = bulk("Ar", "fcc", a=4.0)
    atoms.rattle(0.1, seed=4)
    desc = Distance2b(cutoff=4.2, cutoff_transition_width=1.2)
    d = desc.compute(atoms, gradients=True)
    h = 1e-6
    for k in range(3):
        for l in range(3):
            analytic_x = np.zeros(len(d))
            analytic_w = np.zeros(len(d))
            np.add.at(analytic_x, d.grad_owner, d.dx_dr[:, k, 0] * d.grad_position[:, l])
            np.add.at(analytic_w, d.grad_owner, d.dw_dr[:, k] * d.grad_position[:, l])
            shifted = [desc.compute(m) for m in strained(atoms, k, l, h)]
            np.testing.assert_allclose(analytic_x, (shifted[0].x - shifted[1].x)[:, 0] / (2 * h), atol=1e-7)
            np.testing.assert_allclose(analytic_w, (shifted[0].weight - shifted[1].weight) / (2 * h), atol=1e-7)
