"""angle_3b: enumeration and counts, values and cutoff weights, finite-difference gradients,
strain derivatives (virial rows), invariances, and a timing print."""

import itertools
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from conftest import displaced, strained
from pargap.descriptors.neighbours import neighbour_list

from pargap.descriptors.angle_3b import Angle3b, ordered_slot_pairs
from pargap.descriptors.base import Descriptors, cutoff_function


# ---------------------------------------------------------------- structures


def si_primitive(seed=3):
    """Rattled 2-atom Si diamond primitive cell (|a_i| = 3.84 A, smaller than twice any cutoff used)."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.08, seed=seed)
    return atoms


def sic_cluster(seed=5):
    """Non-periodic 7-atom Si/C cluster, no two atoms closer than 1.6 A."""
    rng = np.random.default_rng(seed)
    pos = [np.zeros(3)]
    while len(pos) < 7:
        p = rng.normal(0, 1.6, 3)
        if min(np.linalg.norm(p - q) for q in pos) > 1.6:
            pos.append(p)
    return Atoms("SiCSiCCSiSi", positions=pos)


def water(r_oh=0.96, angle=104.5):
    t = np.radians(angle)
    return Atoms("OH2", positions=[[0, 0, 0], [r_oh, 0, 0], [r_oh * np.cos(t), r_oh * np.sin(t), 0]])


def sorted_rows(d):
    """Descriptor rows (x, w) sorted, for order-free comparison."""
    rows = np.column_stack([d.x, d.weight]).round(9)
    return rows[np.lexsort(rows.T[::-1])]


def brute_force(atoms, desc, images=2):
    """Independent O(N^3) enumeration: all neighbour slots (atom, lattice shift) within the cutoff
    by explicit image loops, then all ordered pairs of distinct slots -> sorted (x, w) rows and
    the centre of every descriptor."""
    pos, z, cell = atoms.positions, atoms.numbers, atoms.cell[:]
    rng_ = [range(-images, images + 1) if p else range(1) for p in atoms.pbc]
    shifts = [np.array(s) @ cell for s in itertools.product(*rng_)]
    match = lambda zz, Z: Z == 0 or zz == Z  # noqa: E731
    rows, centres = [], []
    for i in range(len(atoms)):
        if not match(z[i], desc.Z):
            continue
        slots = []
        for j in range(len(atoms)):
            for s in shifts:
                d = pos[j] + s - pos[i]
                r = np.linalg.norm(d)
                if 0 < r < desc.cutoff:
                    slots.append((j, d, r))
        for (j, dj, rj), (k, dk, rk) in itertools.permutations(slots, 2):
            if not ((match(z[k], desc.Z1) and match(z[j], desc.Z2))
                    or (match(z[k], desc.Z2) and match(z[j], desc.Z1))):
                continue
            w = (cutoff_function([rj], desc.cutoff, desc.cutoff_transition_width)[0]
                 * cutoff_function([rk], desc.cutoff, desc.cutoff_transition_width)[0])[0]
            rows.append([rj + rk, (rj - rk) ** 2, np.linalg.norm(dj - dk), w])
            centres.append(i)
    rows = np.array(rows).reshape(-1, 4).round(9)
    return rows[np.lexsort(rows.T[::-1])], np.sort(centres)


def summed_gradients(d, a, c):
    """d x / d r_{a,c} and d w / d r_{a,c} per descriptor: all slots of atom a summed."""
    mine = d.grad_atom == a
    dx = np.zeros(d.x.shape)
    dw = np.zeros(len(d))
    np.add.at(dx, d.grad_owner[mine], d.dx_dr[mine, c, :])
    np.add.at(dw, d.grad_owner[mine], d.dw_dr[mine, c])
    return dx, dw


# ---------------------------------------------------------------- API


def test_params_round_trip_and_validation():
    desc = Angle3b(cutoff=3.7, cutoff_transition_width=0.8, Z=14, Z1=6, Z2=14)
    p = desc.params()
    assert p == {"cutoff": 3.7, "cutoff_transition_width": 0.8, "Z": 14, "Z1": 6, "Z2": 14}
    assert all(type(v) in (int, float) for v in p.values())
    assert Angle3b(**p).params() == p
    assert Angle3b.name == "angle_3b" and Angle3b.dimension == 3
    assert Angle3b(cutoff=3.0).params()["cutoff_transition_width"] == 0.5
    with pytest.raises(ValueError, match="cutoff"):
        Angle3b(cutoff=0.0)
    with pytest.raises(ValueError, match="cutoff_transition_width"):
        Angle3b(cutoff=2.0, cutoff_transition_width=3.0)
    with pytest.raises(TypeError):
        Angle3b(3.0)  # keyword-only


def test_empty_structures_return_empty_containers():
    desc = Angle3b(cutoff=3.0)
    for atoms in (Atoms("Si", positions=[[0, 0, 0]]), Atoms("Si2", positions=[[0, 0, 0], [2, 0, 0]])):
        for grads in (False, True):
            d = desc.compute(atoms, gradients=grads)
            assert isinstance(d, Descriptors) and len(d) == 0 and d.x.shape == (0, 3)
            assert d.has_gradients == grads


# ---------------------------------------------------------------- enumeration


def test_ordered_slot_pairs_layout():
    centre = np.array([0, 0, 0, 2, 3, 3, 5, 5, 5, 5])
    first, second = ordered_slot_pairs(centre)
    expected = [(n, m) for n in range(len(centre)) for m in range(len(centre))
                if n != m and centre[n] == centre[m]]
    assert list(zip(first.tolist(), second.tolist())) == expected
    e1, e2 = ordered_slot_pairs(np.zeros(0, dtype=int))
    assert len(e1) == len(e2) == 0


def test_water_counts_values_and_weights():
    atoms = water()
    r_oh, r_hh = 0.96, np.linalg.norm(atoms.positions[1] - atoms.positions[2])
    assert 1.5 < r_hh < 1.55

    d = Angle3b(cutoff=2.0, Z=8).compute(atoms)
    assert len(d) == 2 and d.centre.tolist() == [0, 0]
    np.testing.assert_allclose(d.x, [[2 * r_oh, 0.0, r_hh]] * 2, atol=1e-12)
    np.testing.assert_array_equal(d.x[0], d.x[1])

    # H centres see O and the other H (r_HH = 1.52 < 2): each gives (O,H) and (H,O)
    d = Angle3b(cutoff=2.0, Z=1).compute(atoms)
    assert len(d) == 4 and sorted(d.centre.tolist()) == [1, 1, 2, 2]
    np.testing.assert_allclose(sorted_rows(d)[:, :3], [[r_oh + r_hh, (r_oh - r_hh) ** 2, r_oh]] * 4,
                               atol=1e-9)
    assert len(Angle3b(cutoff=2.0).compute(atoms)) == 6
    assert len(Angle3b(cutoff=2.0, Z=1, Z1=8, Z2=1).compute(atoms)) == 4
    assert len(Angle3b(cutoff=2.0, Z=1, Z1=1, Z2=8).compute(atoms)) == 4
    assert len(Angle3b(cutoff=2.0, Z=1, Z1=1, Z2=1).compute(atoms)) == 0  # only one H neighbour
    assert len(Angle3b(cutoff=2.0, Z=8, Z1=8, Z2=1).compute(atoms)) == 0
    # H-H beyond the cutoff: an H centre has a single neighbour, so no triplet
    assert len(Angle3b(cutoff=1.2, Z=1).compute(atoms)) == 0
    assert len(Angle3b(cutoff=1.2).compute(atoms)) == 2

    # weights: f_c(r_ij) f_c(r_ik) with both arms inside the transition region
    desc = Angle3b(cutoff=2.0, cutoff_transition_width=1.5)
    d = desc.compute(atoms)
    fc_oh, fc_hh = cutoff_function([r_oh, r_hh], 2.0, 1.5)[0]
    assert 0 < fc_hh < fc_oh < 1
    expected = {0: fc_oh * fc_oh, 1: fc_oh * fc_hh, 2: fc_oh * fc_hh}
    np.testing.assert_allclose(d.weight, [expected[c] for c in d.centre], rtol=1e-13)


@pytest.mark.parametrize("case", ["si_3.0", "si_4.0", "cluster_filtered", "cluster_any"])
def test_matches_brute_force_enumeration(case):
    if case.startswith("si"):
        atoms, desc = si_primitive(), Angle3b(cutoff=float(case[3:]), cutoff_transition_width=1.0)
    else:
        atoms = sic_cluster()
        desc = Angle3b(cutoff=3.5, cutoff_transition_width=1.5, **(
            dict(Z=14, Z1=6, Z2=14) if case == "cluster_filtered" else {}))
    d = desc.compute(atoms)
    rows, centres = brute_force(atoms, desc)
    assert len(d) == len(rows) > 0
    np.testing.assert_allclose(sorted_rows(d), rows, atol=1e-8)
    np.testing.assert_array_equal(np.sort(d.centre), centres)
    # centres in atom order; (j, k) and (k, j) both present
    assert np.all(np.diff(d.centre) >= 0)
    if case == "si_3.0":
        # each Si has 4 first neighbours, all images of the other atom: 2 x 4 x 3 ordered pairs
        assert len(d) == 24
    if case == "si_4.0":
        # 4 + 12 neighbours (the 12 second neighbours are self-images): 2 x 16 x 15
        assert len(d) == 480


def test_order_is_centre_then_slot_pairs():
    """Rows come centre by centre, and inside a centre as (slot n, slot m) with n outer."""
    atoms, desc = si_primitive(), Angle3b(cutoff=3.0)
    i, j, r, D = neighbour_list(atoms, 3.0)  # the list the descriptor uses
    o = np.argsort(i, kind="stable")
    i, r, D = i[o], r[o], D[o]
    ref = []
    for c in range(len(atoms)):
        slots = np.flatnonzero(i == c)
        for n in slots:
            for m in slots:
                if n != m:
                    ref.append([r[n] + r[m], (r[n] - r[m]) ** 2, np.linalg.norm(D[n] - D[m])])
    np.testing.assert_allclose(desc.compute(atoms).x, ref, atol=1e-12)


# ---------------------------------------------------------------- gradients


CLUSTER = dict(cutoff=3.5, cutoff_transition_width=1.5)
GRADIENT_CASES = {
    # periodic cell smaller than 2 r_c: several images of the other atom are separate slots
    "si_periodic_3.0": (si_primitive, dict(cutoff=3.0, cutoff_transition_width=1.0)),
    # plus the 12 self-images at 3.84 A, inside the transition region
    "si_periodic_4.0": (si_primitive, dict(cutoff=4.0, cutoff_transition_width=2.0)),
    "sic_cluster_Z14_Z1C_Z2Si": (sic_cluster, dict(CLUSTER, Z=14, Z1=6, Z2=14)),
    "sic_cluster_Z6_Z1Si_Z2Si": (sic_cluster, dict(CLUSTER, Z=6, Z1=14, Z2=14)),
    "sic_cluster_any": (sic_cluster, CLUSTER),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_CASES))
def test_gradients_match_finite_differences(case):
    make, params = GRADIENT_CASES[case]
    atoms, desc = make(), Angle3b(**params)
    d = desc.compute(atoms, gradients=True)
    assert len(d) > 0
    G = 3 * len(d)
    assert d.grad_owner.shape == d.grad_atom.shape == (G,)
    assert d.grad_position.shape == (G, 3) and d.dx_dr.shape == (G, 3, 3) and d.dw_dr.shape == (G, 3)
    assert np.any(d.dw_dr != 0), "choose a transition width that makes the weight move"
    h = 1e-6
    for a in range(len(atoms)):
        for c in range(3):
            shifted = [desc.compute(m) for m in displaced(atoms, a, c, h)]
            assert len(shifted[0]) == len(shifted[1]) == len(d)
            dx_num = (shifted[0].x - shifted[1].x) / (2 * h)
            dw_num = (shifted[0].weight - shifted[1].weight) / (2 * h)
            dx, dw = summed_gradients(d, a, c)
            np.testing.assert_allclose(dx, dx_num, atol=2e-7, err_msg=f"atom {a} axis {c}")
            np.testing.assert_allclose(dw, dw_num, atol=2e-7, err_msg=f"atom {a} axis {c}")


def test_slot_positions_and_translation_sum():
    atoms = si_primitive()
    d = Angle3b(cutoff=4.0, cutoff_transition_width=2.0).compute(atoms, gradients=True)
    n = len(d)
    i_pos, j_pos, k_pos = d.grad_position[:n], d.grad_position[n:2 * n], d.grad_position[2 * n:]
    np.testing.assert_array_equal(d.grad_atom[:n], d.centre)
    np.testing.assert_allclose(i_pos, atoms.positions[d.centre])
    r_ij = np.linalg.norm(j_pos - i_pos, axis=1)
    r_ik = np.linalg.norm(k_pos - i_pos, axis=1)
    np.testing.assert_allclose(d.x[:, 0], r_ij + r_ik, atol=1e-12)
    np.testing.assert_allclose(d.x[:, 2], np.linalg.norm(j_pos - k_pos, axis=1), atol=1e-12)
    # the j and k slots are images of their atoms: they differ from the atom by a lattice vector
    for slot in (slice(n, 2 * n), slice(2 * n, 3 * n)):
        offset = d.grad_position[slot] - atoms.positions[d.grad_atom[slot]]
        frac = np.linalg.solve(atoms.cell[:].T, offset.T)
        np.testing.assert_allclose(frac, np.round(frac), atol=1e-10)
    # translation invariance: the three slots' gradients sum to zero; r_jk has no i-slot part
    np.testing.assert_allclose(d.dx_dr.reshape(3, n, 3, 3).sum(0), 0, atol=1e-13)
    np.testing.assert_allclose(d.dw_dr.reshape(3, n, 3).sum(0), 0, atol=1e-13)
    assert np.all(d.dx_dr[:n, :, 2] == 0)


@pytest.mark.parametrize("cutoff,width", [(3.0, 1.0), (4.0, 2.0)])
def test_strain_derivative_matches_finite_differences(cutoff, width):
    """sum_g dx_dr[g, k, :] R_{g, l} = d x / d eps_kl under r -> (1 + eps) r (cell and atoms),
    which is what the virial rows use; the same for the weight."""
    atoms, desc = si_primitive(seed=11), Angle3b(cutoff=cutoff, cutoff_transition_width=width)
    d = desc.compute(atoms, gradients=True)
    analytic_x = np.einsum("gkd,gl->kld", d.dx_dr, d.grad_position)
    analytic_w = np.einsum("gk,gl->kl", d.dw_dr, d.grad_position)
    # scatter descriptor-wise: keep per-descriptor values
    per_x = np.zeros((len(d), 3, 3, 3))
    np.add.at(per_x, d.grad_owner, np.einsum("gkd,gl->gkld", d.dx_dr, d.grad_position))
    per_w = np.zeros((len(d), 3, 3))
    np.add.at(per_w, d.grad_owner, np.einsum("gk,gl->gkl", d.dw_dr, d.grad_position))
    np.testing.assert_allclose(per_x.sum(0), analytic_x, atol=1e-10)
    np.testing.assert_allclose(per_w.sum(0), analytic_w, atol=1e-10)
    h = 1e-6
    for k in range(3):
        for l in range(3):
            shifted = [desc.compute(m) for m in strained(atoms, k, l, h)]
            assert len(shifted[0]) == len(shifted[1]) == len(d)
            num_x = (shifted[0].x - shifted[1].x) / (2 * h)
            num_w = (shifted[0].weight - shifted[1].weight) / (2 * h)
            np.testing.assert_allclose(per_x[:, k, l, :], num_x, atol=2e-7, err_msg=f"eps_{k}{l}")
            np.testing.assert_allclose(per_w[:, k, l], num_w, atol=2e-7, err_msg=f"eps_{k}{l}")


# ---------------------------------------------------------------- invariances


@pytest.mark.parametrize("periodic", [False, True])
def test_invariance_under_rotation_translation_permutation(periodic, rng):
    if periodic:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(0.1, seed=7)
        atoms.numbers[[1, 4, 6]] = 6
        desc = Angle3b(cutoff=4.0, cutoff_transition_width=1.0, Z=14, Z1=6, Z2=14)
    else:
        atoms = sic_cluster()
        desc = Angle3b(cutoff=3.5, cutoff_transition_width=1.0, Z=14, Z1=6, Z2=14)
    ref = desc.compute(atoms)
    assert len(ref) > 0
    moved = atoms.copy()
    moved.rotate(37, (1, 2, 3), center=(0.3, 0.1, 0.0), rotate_cell=periodic)
    moved.translate((1.0, -2.0, 0.5))
    perm = rng.permutation(len(atoms))
    moved = moved[perm]
    out = desc.compute(moved)
    np.testing.assert_allclose(sorted_rows(out), sorted_rows(ref), atol=1e-8)
    # centres follow the permutation: the count per original atom is unchanged
    np.testing.assert_array_equal(np.bincount(perm[out.centre], minlength=len(atoms)),
                                  np.bincount(ref.centre, minlength=len(atoms)))


# ---------------------------------------------------------------- timing


def test_timing_64_atom_si(capsys):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=1)
    desc = Angle3b(cutoff=4.0)
    times = {}
    for grads in (False, True):
        desc.compute(atoms, gradients=grads)  # warm-up
        t0 = time.perf_counter()
        reps = 5
        for _ in range(reps):
            d = desc.compute(atoms, gradients=grads)
        times[grads] = (time.perf_counter() - t0) / reps
    assert len(d) > 0
    with capsys.disabled():
        print(f"\n[angle_3b timing] 64-atom Si, cutoff 4.0, {len(d)} descriptors: "
              f"values {1e3 * times[False]:.1f} ms, values+gradients {1e3 * times[True]:.1f} ms")
