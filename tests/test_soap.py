"""SOAP: gap_fit's exact values (QUIP regression sparse points), an independent slow reference,
gradients and virial contractions by finite differences, symmetries, and a timing print."""

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.special
from ase import Atoms
from ase.build import bulk
from ase.io import read

from conftest import displaced, strained
from pargap.descriptors.soap import (
    Soap,
    equispaced_gauss_basis,
    real_spherical_harmonics,
    scaled_spherical_in,
)

QUIP_DATA = Path(__file__).resolve().parent / "data" / "quip_gapfit_regression"

SMALL = dict(cutoff=4.0, cutoff_transition_width=1.0, l_max=4, n_max=4, atom_sigma=0.5)


# ------------------------------------------------------------------------------------------
# gap_fit's numbers


def test_quip_sparse_points_are_reproduced():
    """The 100 CUR sparse points of QUIP's Si SOAP fit, by global descriptor index."""
    ref = json.loads(gzip.decompress((QUIP_DATA / "Si.soap.cur_points.json.gz").read_bytes()))
    config = ref["config"]
    for setting in ("l_max=8", "n_max=8", "cutoff=4.0", "cutoff_transition_width=1.0",
                    "atom_sigma=0.5", "central_weight=1.0"):
        assert setting in config
    frames = read(QUIP_DATA / "Si.np1.xyz", index=":")
    soap = Soap(cutoff=4.0, cutoff_transition_width=1.0, l_max=8, n_max=8, atom_sigma=0.5,
                central_weight=1.0, n_species=1, species_Z=[14], Z=14)
    assert soap.dimension == 325 == ref["coords"][0]["dimensions"]
    X = np.concatenate([soap.compute(atoms).x for atoms in frames])
    assert X.shape == (sum(len(a) for a in frames), 325)
    index = np.asarray(ref["index"]).ravel() - 1  # 1-based global descriptor (= atom) numbers
    sparsex = np.asarray(ref["coords"][0]["sparsex"]).reshape(-1, 325)
    assert len(index) == len(sparsex) == 100
    deviation = np.abs(X[index] - sparsex).max()
    print(f"\nSOAP vs QUIP sparsex: max |deviation| = {deviation:.2e}")
    assert deviation < 1e-8


# ------------------------------------------------------------------------------------------
# Building blocks


def test_overlap_matrix_matches_quadrature():
    alpha, rho, T, L = equispaced_gauss_basis(5, 4.0, 0.5, 10.0)
    assert alpha == 2.0
    # R_b = r_c + sigma_a sqrt(2 eps ln 10) = 7.3930702 for the Si fit, h = R_b / n_max = 0.9241338
    # (GAPFIT_MATH 4.2 quotes 7.39305 and 0.924131; with those the QUIP sparse points are off by 4e-6)
    assert equispaced_gauss_basis(8, 4.0, 0.5, 10.0)[1][1] == pytest.approx(0.92413378, abs=1e-8)
    S = L @ L.T
    for a in range(5):
        for b in range(5):
            num, _ = scipy.integrate.quad(
                lambda r: r * r * np.exp(-alpha * ((r - rho[a]) ** 2 + (r - rho[b]) ** 2)), 0, 20,
                epsabs=1e-14, epsrel=1e-13, limit=200)
            assert S[a, b] == pytest.approx(num, rel=1e-10, abs=1e-14)
    C = np.exp(-alpha * (rho[:, None] - rho[None, :]) ** 2)
    np.testing.assert_allclose(C @ T, L, atol=1e-12)
    assert np.allclose(L, np.tril(L))


def test_scaled_modified_spherical_bessel():
    z = np.concatenate([[0.0, 1e-8, 1e-3], np.geomspace(0.01, 300.0, 400)])
    got = scaled_spherical_in(12, z)
    assert got.shape == (13, len(z))
    np.testing.assert_allclose(got[:, 0], np.eye(13)[0])  # i_l(0) = delta_l0
    for l in range(13):
        direct = np.sqrt(np.pi / (2 * z[1:])) * scipy.special.ive(l + 0.5, z[1:])
        np.testing.assert_allclose(got[l, 1:], direct, rtol=1e-12, atol=0)
    small = z[(z > 0) & (z < 20)]
    np.testing.assert_allclose(scaled_spherical_in(3, small)[2],
                               scipy.special.spherical_in(2, small) * np.exp(-small), rtol=1e-10)
    # huge arguments stay finite: e^{-z} i_l(z) -> 1 / (2z)
    far = scaled_spherical_in(8, np.array([1e4, 1e6]))
    np.testing.assert_allclose(far[0], 1 / (2 * np.array([1e4, 1e6])), rtol=1e-3)


def _sphere_quadrature(n):
    """Gauss-Legendre in cos(theta) x uniform phi: exact for polynomials of degree < n on the sphere."""
    ct, wt = np.polynomial.legendre.leggauss(n)
    phi = 2 * np.pi * np.arange(2 * n) / (2 * n)
    ct, phi = np.meshgrid(ct, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    u = np.stack([st * np.cos(phi), st * np.sin(phi), ct], axis=-1).reshape(-1, 3)
    w = (wt[:, None] * np.full(2 * n, 2 * np.pi / (2 * n))[None, :]).ravel()
    return u, w


def test_real_spherical_harmonics_orthonormal_and_addition_theorem(rng):
    l_max = 7
    u, w = _sphere_quadrature(20)
    Y, _ = real_spherical_harmonics(u, l_max)
    np.testing.assert_allclose((Y * w[:, None]).T @ Y, np.eye((l_max + 1) ** 2), atol=1e-12)
    # sum_m Y_lm(a) Y_lm(b) = (2l+1)/(4 pi) P_l(a . b), the invariant the power spectrum uses
    a = rng.normal(size=(6, 3))
    b = rng.normal(size=(6, 3))
    a /= np.linalg.norm(a, axis=1)[:, None]
    b /= np.linalg.norm(b, axis=1)[:, None]
    Ya, _ = real_spherical_harmonics(a, l_max)
    Yb, _ = real_spherical_harmonics(b, l_max)
    cos = (a * b).sum(1)
    for l in range(l_max + 1):
        sl = slice(l * l, (l + 1) ** 2)
        expected = (2 * l + 1) / (4 * np.pi) * scipy.special.eval_legendre(l, cos)
        np.testing.assert_allclose((Ya[:, sl] * Yb[:, sl]).sum(1), expected, atol=1e-13)


def test_real_spherical_harmonics_gradient(rng):
    l_max = 6
    r = rng.normal(size=(10, 3)) * 2.0
    r[0] = [0.0, 0.0, 1.7]  # on the z axis
    r[1] = [0.0, 0.0, -0.9]
    norm = np.linalg.norm(r, axis=1)
    _, dY = real_spherical_harmonics(r / norm[:, None], l_max, gradients=True)
    h = 1e-6
    for c in range(3):
        shifted = []
        for sign in (1, -1):
            rr = r.copy()
            rr[:, c] += sign * h
            shifted.append(real_spherical_harmonics(rr / np.linalg.norm(rr, axis=1)[:, None], l_max)[0])
        numeric = (shifted[0] - shifted[1]) / (2 * h)
        np.testing.assert_allclose(dY[:, c] / norm[:, None], numeric, atol=1e-8)


# ------------------------------------------------------------------------------------------
# An independent slow reference: complex harmonics, direct Bessel functions, loops


def _reference_soap(atoms, *, cutoff, cutoff_transition_width, l_max, n_max, atom_sigma,
                    species_Z, Z, central_weight=1.0, central_reference_all_species):
    """GAPFIT_MATH 4.2-4.4 written out with loops, complex Y_lm and quadrature for S."""
    from ase.neighborlist import neighbor_list

    alpha = 1 / (2 * atom_sigma**2)
    Rb = cutoff + atom_sigma * math.sqrt(2 * 10.0 * math.log(10))
    rho = np.array([a * Rb / n_max for a in range(n_max)])
    S = np.array([[scipy.integrate.quad(lambda r: r * r * math.exp(-alpha * ((r - ra) ** 2 + (r - rb) ** 2)),
                                        0, Rb + 10, epsabs=1e-15, epsrel=1e-13, limit=200)[0]
                   for rb in rho] for ra in rho])
    C = np.exp(-alpha * np.subtract.outer(rho, rho) ** 2)
    Lc = np.linalg.cholesky(S)
    T = np.linalg.solve(C, Lc)
    ns = len(species_Z)
    K = ns * n_max
    i_all, j_all, d_all, D_all = neighbor_list("ijdD", atoms, cutoff)
    out = []
    for i in range(len(atoms)):
        if Z and atoms.numbers[i] != Z:
            continue
        c = np.zeros((K, l_max + 1, 2 * l_max + 1), dtype=complex)
        mine = i_all == i
        for j, r, dv in zip(j_all[mine], d_all[mine], D_all[mine]):
            if r >= cutoff or atoms.numbers[j] not in species_Z:
                continue
            s = species_Z.index(atoms.numbers[j])
            w = r - (cutoff - cutoff_transition_width)
            fc = 1.0 if w <= 0 else 0.5 * (math.cos(math.pi * w / cutoff_transition_width) + 1)
            polar = math.acos(dv[2] / r)
            azim = math.atan2(dv[1], dv[0])
            for l in range(l_max + 1):
                g = np.exp(-alpha * (r * r + rho**2)) * scipy.special.spherical_in(l, 2 * alpha * r * rho)
                radial = fc * g @ T
                for m in range(-l, l + 1):
                    Ylm = scipy.special.sph_harm(m, l, azim, polar)
                    c[s * n_max:(s + 1) * n_max, l, m + l_max] += radial * Ylm
        centre = central_weight * Lc[0, 0] / math.sqrt(4 * math.pi)
        for s in range(ns):
            if central_reference_all_species or species_Z[s] == atoms.numbers[i]:
                c[s * n_max, 0, l_max] += centre
        v = []
        for k in range(K):
            for kp in range(k + 1):
                for l in range(l_max + 1):
                    p = np.real(np.sum(c[k, l] * np.conj(c[kp, l]))) / math.sqrt(2 * l + 1)
                    v.append(p * (math.sqrt(2) if k != kp else 1.0))
        v = np.array(v + [0.0])
        out.append(v / np.linalg.norm(v))
    return np.array(out)


def _sic_cluster(rng, n=7):
    pos = [np.zeros(3)]
    while len(pos) < n:
        p = rng.normal(0, 1.6, 3)
        if min(np.linalg.norm(p - q) for q in pos) > 1.6:
            pos.append(p)
    symbols = ["Si", "C", "Si", "C", "C", "Si", "Si", "C"][:n]
    return Atoms(symbols, positions=pos)


@pytest.mark.parametrize("all_species", [False, True])
def test_matches_independent_reference_two_species(rng, all_species):
    atoms = _sic_cluster(rng)
    params = dict(cutoff=3.5, cutoff_transition_width=0.8, l_max=3, n_max=3, atom_sigma=0.6)
    for Zc in (14, 6):
        soap = Soap(**params, n_species=2, species_Z=[14, 6], Z=Zc,
                    central_reference_all_species=all_species)
        ref = _reference_soap(atoms, **params, species_Z=[14, 6], Z=Zc,
                              central_reference_all_species=all_species)
        got = soap.compute(atoms)
        np.testing.assert_array_equal(got.centre, np.flatnonzero(atoms.numbers == Zc))
        np.testing.assert_allclose(got.x, ref, atol=1e-12)


def test_matches_independent_reference_periodic_one_species():
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.1, seed=7)
    params = dict(cutoff=4.2, cutoff_transition_width=1.0, l_max=4, n_max=4, atom_sigma=0.45)
    ref = _reference_soap(atoms, **params, species_Z=[14], Z=0, central_reference_all_species=True)
    np.testing.assert_allclose(Soap(**params).compute(atoms).x, ref, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Gradients


def _structures():
    si2 = bulk("Si", "diamond", a=5.43)  # 2 atoms, 40 A^3: many self-images within 4 A
    si2.rattle(0.15, seed=1)
    sic8 = bulk("Si", "diamond", a=4.9, cubic=True)
    sic8.numbers[[1, 3, 4, 6]] = 6
    sic8.rattle(0.12, seed=2)
    sic8.set_cell(sic8.cell[:] @ (np.eye(3) + np.array([[0.02, 0.01, 0], [0, -0.01, 0.03], [0.01, 0, 0]])),
                  scale_atoms=True)
    cluster = _sic_cluster(np.random.default_rng(5), 6)
    return {"Si2 periodic": si2, "SiC8 periodic": sic8, "SiC cluster": cluster}


STRUCTURES = _structures()
SPECIES = {"one species": dict(n_species=1, species_Z=[14]),
           "two species": dict(n_species=2, species_Z=[14, 6])}


def _summed_by_atom(d, n_atoms, c):
    """(n_atoms, n_desc, D): sum of dx_dr[:, c] over the slots of each atom."""
    out = np.zeros((n_atoms, len(d), d.x.shape[1]))
    np.add.at(out, (d.grad_atom, d.grad_owner), d.dx_dr[:, c])
    return out


@pytest.mark.parametrize("species", SPECIES)
@pytest.mark.parametrize("name", STRUCTURES)
def test_position_gradients_match_finite_differences(name, species):
    atoms = STRUCTURES[name]
    soap = Soap(**SMALL, **SPECIES[species], Z=0, covariance_sigma0=0.3)
    d = soap.compute(atoms, gradients=True)
    G = len(d.grad_owner)
    assert d.dx_dr.shape == (G, 3, soap.dimension) and d.dw_dr.shape == (G, 3)
    assert np.all(d.dw_dr == 0) and np.all(d.weight == 1)
    # rows: one centre slot per descriptor, at the centre, holding minus the neighbour slots
    is_centre = (d.grad_atom == d.centre[d.grad_owner]) & np.all(
        np.isclose(d.grad_position, atoms.positions[d.grad_atom]), axis=1)
    total = np.zeros((len(d), 3, soap.dimension))
    np.add.at(total, d.grad_owner, d.dx_dr)
    np.testing.assert_allclose(total, 0, atol=1e-13)
    assert np.bincount(d.grad_owner[is_centre], minlength=len(d)).min() >= 1
    assert np.all(d.dx_dr[:, :, -1] == 0)
    if name == "Si2 periodic":  # self-images are separate slots
        assert np.any((d.grad_atom == d.centre[d.grad_owner]) & ~is_centre)
    h = 1e-5
    for a in range(len(atoms)):
        for c in range(3):
            shifted = [soap.compute(m).x for m in displaced(atoms, a, c, h)]
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            np.testing.assert_allclose(_summed_by_atom(d, len(atoms), c)[a], numeric, atol=2e-8)


@pytest.mark.parametrize("species", SPECIES)
@pytest.mark.parametrize("name", ["Si2 periodic", "SiC8 periodic"])
def test_strain_contraction_matches_finite_differences(name, species):
    """sum_g dx_dr[g, k] R_g,l = dx / d eps_kl for positions and cell mapped by (I + eps)."""
    atoms = STRUCTURES[name]
    soap = Soap(**SMALL, **SPECIES[species])
    d = soap.compute(atoms, gradients=True)
    virial_like = np.zeros((len(d), 3, 3, soap.dimension))
    np.add.at(virial_like, d.grad_owner, d.dx_dr[:, :, None, :] * d.grad_position[:, None, :, None])
    h = 1e-6
    for k in range(3):
        for l in range(3):
            shifted = [soap.compute(m).x for m in strained(atoms, k, l, h)]
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            np.testing.assert_allclose(virial_like[:, k, l], numeric, atol=2e-8)


def test_gradients_with_narrow_gaussians_stay_finite():
    """atom_sigma = 0.15: exp(-alpha (r^2 + rho^2)) i_l(2 alpha r rho) would overflow if formed directly."""
    atoms = STRUCTURES["SiC cluster"]
    soap = Soap(cutoff=5.0, cutoff_transition_width=1.0, l_max=3, n_max=6, atom_sigma=0.15,
                n_species=2, species_Z=[14, 6])
    assert 2 * soap.alpha * 5.0 * soap.rho[-1] > 710  # beyond exp's range
    d = soap.compute(atoms, gradients=True)
    assert np.all(np.isfinite(d.x)) and np.all(np.isfinite(d.dx_dr))
    h = 1e-6
    a, c = 1, 0
    moved = [atoms.copy(), atoms.copy()]
    moved[0].positions[a, c] += h
    moved[1].positions[a, c] -= h
    numeric = (soap.compute(moved[0]).x - soap.compute(moved[1]).x) / (2 * h)
    np.testing.assert_allclose(_summed_by_atom(d, len(atoms), c)[a], numeric, atol=1e-7)


# ------------------------------------------------------------------------------------------
# Symmetries, centres, species, parameters


def test_invariance_and_unit_length(rng):
    atoms = _sic_cluster(rng, 8)
    soap = Soap(**SMALL, n_species=2, species_Z=[14, 6])
    ref = soap.compute(atoms).x
    np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, rtol=1e-14)
    assert np.all(ref[:, -1] == 0)
    moved = atoms.copy()
    moved.rotate(73, (1, -2, 0.5), center=(0.3, 0.1, 0.0))
    moved.translate((1.0, -2.0, 0.5))
    perm = rng.permutation(len(atoms))
    moved = moved[perm]
    np.testing.assert_allclose(soap.compute(moved).x, ref[perm], atol=1e-13)
    # periodic: rotating cell and positions together, and translating, changes nothing
    bulk8 = STRUCTURES["SiC8 periodic"]
    ref = soap.compute(bulk8).x
    turned = bulk8.copy()
    turned.rotate(41, (0.2, 1, 1), rotate_cell=True)
    turned.translate((0.7, 0.1, -3.0))
    np.testing.assert_allclose(soap.compute(turned).x, ref, atol=1e-13)


def test_isolated_atom_gives_the_centre_only_descriptor():
    lone = Atoms("Si", positions=[[0.0, 0.0, 0.0]])
    soap = Soap(**SMALL, species_Z=[14], covariance_sigma0=0.25)
    d = soap.compute(lone, gradients=True)
    expected = np.zeros(soap.dimension)
    expected[0] = 1.0  # only c_{1 0 0 0} = w_c L_11 Y_00 is non-zero
    expected[-1] = 0.25
    np.testing.assert_allclose(d.x, [expected], atol=1e-15)
    assert d.grad_owner.tolist() == [0] and d.grad_atom.tolist() == [0]
    assert np.all(d.dx_dr == 0)
    # two species: the centre term feeds the centre's channel only, or every channel
    two = dict(SMALL, n_species=2, species_Z=[14, 6])
    own = Soap(**two).compute(lone).x[0]
    assert own[0] == pytest.approx(1.0) and np.count_nonzero(own) == 1
    every = Soap(**two, central_reference_all_species=True).compute(lone).x[0]
    n, L1 = 4, 5  # p_{00}, p_{n0} (sqrt 2) and p_{nn}, l = 0: a^2 (1, sqrt 2, 1) / 2
    pair = lambda k, kp: k * (k + 1) // 2 + kp  # noqa: E731
    assert every[pair(0, 0) * L1] == pytest.approx(0.5)
    assert every[pair(n, 0) * L1] == pytest.approx(math.sqrt(2) / 2)
    assert every[pair(n, n) * L1] == pytest.approx(0.5)
    assert np.count_nonzero(np.abs(every) > 1e-15) == 3


def test_centres_and_species_selection():
    atoms = Atoms("SiCSiSi", positions=[[0, 0, 0], [1.9, 0, 0], [0, 2.3, 0], [0.2, 0.1, 2.4]])
    si_only = Soap(**SMALL, species_Z=[14], Z=14)
    d = si_only.compute(atoms, gradients=True)
    np.testing.assert_array_equal(d.centre, [0, 2, 3])
    assert 1 not in d.grad_atom  # C is not a listed neighbour species
    # ... so removing it changes nothing
    np.testing.assert_allclose(si_only.compute(atoms[[0, 2, 3]]).x, d.x, atol=1e-15)
    # species_Z = [0]: every neighbour in one channel, the C atom counts as a neighbour and a centre
    wildcard = Soap(**SMALL).compute(atoms)
    assert len(wildcard) == 4
    assert not np.allclose(wildcard.x[[0, 2, 3]], d.x)
    as_si = atoms.copy()
    as_si.numbers[:] = 14
    np.testing.assert_allclose(wildcard.x, si_only.compute(as_si).x, atol=1e-15)
    assert len(Soap(**SMALL, species_Z=[14], Z=8).compute(atoms, gradients=True)) == 0


def test_neighbours_exactly_at_the_cutoff_are_excluded():
    soap = Soap(**SMALL, species_Z=[14])
    pair = Atoms("Si2", positions=[[0, 0, 0], [4.0, 0, 0]])
    d = soap.compute(pair, gradients=True)
    assert sorted(d.grad_owner.tolist()) == [0, 1]  # centre slots only
    alone = soap.compute(Atoms("Si", positions=[[0, 0, 0]])).x
    np.testing.assert_allclose(d.x, np.repeat(alone, 2, axis=0), atol=1e-15)


def test_params_round_trip_and_dimension():
    soap = Soap(cutoff=5.0, l_max=6, n_max=5, atom_sigma=0.4, n_species=3, species_Z=(14, 6, 8),
                Z=6, covariance_sigma0=0.1, central_weight=0.7)
    K = 15
    assert soap.dimension == 7 * K * (K + 1) // 2 + 1
    p = soap.params()
    assert p["species_Z"] == [14, 6, 8] and all(type(z) is int for z in p["species_Z"])
    assert p["central_reference_all_species"] is False
    assert Soap(cutoff=4, l_max=2, n_max=2, atom_sigma=0.5).params()["central_reference_all_species"] is True
    again = Soap(**p)
    assert again.params() == p
    atoms = _sic_cluster(np.random.default_rng(3))
    atoms.numbers[0] = 8
    np.testing.assert_array_equal(again.compute(atoms).x, soap.compute(atoms).x)
    json.dumps(p)  # plain values


@pytest.mark.parametrize("bad", [
    dict(cutoff=0.0), dict(cutoff_transition_width=5.0), dict(atom_sigma=0.0), dict(n_max=0),
    dict(l_max=-1), dict(n_species=2, species_Z=[14]), dict(n_species=2),
])
def test_invalid_parameters(bad):
    with pytest.raises(ValueError, match="soap"):
        Soap(**{**SMALL, **bad})


def test_not_normalised_keeps_the_raw_power_spectrum(rng):
    atoms = _sic_cluster(rng)
    raw = Soap(**SMALL, normalise=False, covariance_sigma0=0.2).compute(atoms, gradients=True)
    unit = Soap(**SMALL).compute(atoms)
    assert np.all(raw.x[:, -1] == 0.2)
    v = raw.x[:, :-1]
    np.testing.assert_allclose(v / np.linalg.norm(v, axis=1)[:, None], unit.x[:, :-1], atol=1e-14)
    h = 1e-5
    moved = [atoms.copy(), atoms.copy()]
    moved[0].positions[2, 1] += h
    moved[1].positions[2, 1] -= h
    soap = Soap(**SMALL, normalise=False)
    numeric = (soap.compute(moved[0]).x - soap.compute(moved[1]).x) / (2 * h)
    np.testing.assert_allclose(_summed_by_atom(raw, len(atoms), 1)[2], numeric, atol=1e-8)


# ------------------------------------------------------------------------------------------
# Speed (printed, not asserted)


def test_timing_64_atom_silicon():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=0)
    soap = Soap(cutoff=5.0, l_max=6, n_max=8, atom_sigma=0.5, species_Z=[14], Z=14)
    rates = {}
    for gradients in (False, True):
        soap.compute(atoms, gradients=gradients)
        best = np.inf
        for _ in range(5):
            start = time.perf_counter()
            d = soap.compute(atoms, gradients=gradients)
            best = min(best, time.perf_counter() - start)
        rates[gradients] = len(atoms) / best
    print(f"\nSOAP 64-atom Si (n_max=8, l_max=6, r_c=5, D={soap.dimension}, "
          f"{len(d.grad_owner)} gradient rows): values {rates[False]:.0f} atoms/s, "
          f"values+gradients {rates[True]:.0f} atoms/s")
    assert len(d) == 64


@pytest.mark.parametrize("atom_sigma", [0.5, 0.15])
def test_interpolated_radial_functions_equal_the_exact_ones(atom_sigma):
    """The radial functions are cubic-Hermite interpolated from a fine table; the interpolant must
    stay far inside QUIP's 1e-8 tolerance, values and slopes alike."""
    soap = Soap(cutoff=5.0, cutoff_transition_width=1.0, l_max=8, n_max=8, atom_sigma=atom_sigma)
    r = np.random.default_rng(5).uniform(0.05, 5.0, 4000)
    exact, dexact = soap.radial_exact(r)
    from pargap.descriptors.base import cutoff_function

    fc, dfc = cutoff_function(r, 5.0, 1.0)
    R, dR = soap._radial(r, gradients=True)
    scale = np.abs(exact).max()
    np.testing.assert_allclose(R, fc[:, None, None] * exact, atol=1e-11 * scale, rtol=0)
    np.testing.assert_allclose(dR, fc[:, None, None] * dexact + dfc[:, None, None] * exact,
                               atol=1e-9 * np.abs(dexact).max(), rtol=0)
