"""Contracted prediction (pargap.gp.prediction) equals the K_NM rows (pargap.gp.observations) times
alpha, for every descriptor and kernel path; the potential file's /gp is read only for variances."""

import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from pargap.descriptors import make_descriptor
from pargap.errors import InputError
from pargap.gp.kernels import DotProduct, SquaredExponential
from pargap.gp.model import Model
from pargap.gp.observations import model_rows
from pargap.gp.prediction import Predictor
from pargap.potential.potential import Potential

SOAP = dict(cutoff=3.5, l_max=3, n_max=3, atom_sigma=0.5, n_species=2, species_Z=[14, 6])


def structures():
    rng = np.random.default_rng(3)
    cell = bulk("SiC", "zincblende", a=4.36, cubic=True).repeat((2, 1, 1))
    cell.numbers[[0, 5]] = [6, 14]
    cell.rattle(0.15, seed=1)
    cluster = Atoms("Si3C2", positions=rng.uniform(0, 3.0, (5, 3)), pbc=False)
    return [cell, cluster]


def model(descriptor, kernel, n_sparse, rng, pool):
    """Sparse points drawn from the structures' own descriptors, random alpha and weights."""
    X = np.concatenate([descriptor.compute(a).x for a in pool])
    pick = rng.choice(len(X), n_sparse, replace=False)
    return Model(descriptor, kernel, X[pick], rng.uniform(0.5, 1.0, n_sparse), rng.normal(size=n_sparse))


def cases():
    rng = np.random.default_rng(0)
    pool = structures()
    two = make_descriptor("distance_2b", cutoff=4.0, cutoff_transition_width=0.8, Z1=14, Z2=6)
    three = make_descriptor("angle_3b", cutoff=3.2, cutoff_transition_width=0.6, Z=14, Z1=14, Z2=6)
    soap = make_descriptor("soap", Z=14, **SOAP)
    small = make_descriptor("soap", Z=14, cutoff=3.5, l_max=0, n_max=1, atom_sigma=0.5, n_species=2,
                            species_Z=[14, 6])  # D = 4
    return {
        "distance_2b ard_se f0": model(two, SquaredExponential(delta=0.5, theta=[0.7], f0=0.2), 6, rng, pool),
        "angle_3b ard_se": model(three, SquaredExponential(delta=0.3, theta=[1.0, 2.0, 1.5]), 8, rng, pool),
        "soap zeta=2, D > M (sum over sparse points)": model(soap, DotProduct(delta=0.2, zeta=2), 4, rng, pool),
        "soap zeta=2, D < M (quadratic form)": model(small, DotProduct(delta=0.2, zeta=2), 8, rng, pool),
        "soap zeta=3": model(soap, DotProduct(delta=0.2, zeta=3), 4, rng, pool),
        "soap zeta=1.5": model(soap, DotProduct(delta=0.2, zeta=1.5), 4, rng, pool),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_contracted_prediction_equals_rows_times_alpha(name):
    m = cases()[name]
    predictor = Predictor([m])
    for atoms in structures():
        rows = model_rows(atoms, [m])
        p = predictor(atoms)
        scale = np.abs(rows.forces @ m.alpha).max() + 1e-12
        assert p.energy == pytest.approx(float(rows.energy @ m.alpha), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(p.energies, rows.local @ m.alpha, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(p.forces, rows.forces @ m.alpha, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_allclose(p.virial, rows.virial @ m.alpha, rtol=1e-10, atol=1e-11 * scale)


def test_forces_and_virial_of_several_models_are_energy_derivatives():
    """The sum of all models: forces = -dE/dr and virial = -dE/dstrain by central differences."""
    potential = Potential(list(cases().values()), {14: -1.0, 6: -2.0})
    atoms = structures()[0]
    p = potential.predict(atoms)
    h = 1e-5
    for a, k in [(0, 0), (3, 2), (9, 1)]:
        e = []
        for s in (h, -h):
            moved = atoms.copy()
            moved.positions[a, k] += s
            e.append(potential.predict(moved, gradients=False)["energy"])
        assert p["forces"][a, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-7)
    for k, l in [(0, 0), (0, 1), (2, 1)]:
        e = []
        for s in (h, -h):
            eps = np.eye(3)
            eps[k, l] += s / 2
            eps[l, k] += s / 2
            moved = atoms.copy()
            moved.set_cell(atoms.cell[:] @ eps, scale_atoms=True)
            e.append(potential.predict(moved, gradients=False)["energy"])
        assert p["virial"][k, l] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-7)


def test_gp_factor_is_read_only_when_asked(tmp_path):
    """Loading and predicting never touch /gp; the first variance reads it from the file."""
    m = cases()["distance_2b ard_se f0"]
    R = np.triu(np.random.default_rng(1).normal(size=(m.n_sparse, m.n_sparse))) + 5 * np.eye(m.n_sparse)
    Potential([m], {14: 0.0, 6: 0.0}, factor=R, sparse_jitter=1e-8).save(tmp_path / "gp.h5")
    potential = Potential.load(tmp_path / "gp.h5")
    os.rename(tmp_path / "gp.h5", tmp_path / "moved.h5")
    potential.predict(structures()[0])  # no file access needed
    with pytest.raises(Exception, match="gp.h5"):
        potential.factor
    again = Potential.load(tmp_path / "moved.h5")
    np.testing.assert_array_equal(again.factor, R)


@pytest.mark.parametrize("rewrite", ["replaced (save)", "overwritten in place"])
def test_gp_factor_of_a_rewritten_file_is_refused(tmp_path, rewrite):
    """A new fit written to the same path after loading: the lazy read of /gp must not hand the old
    potential's models the new fit's factor (same M, so no shape check could see it)."""
    import h5py

    m = cases()["distance_2b ard_se f0"]
    rng = np.random.default_rng(2)
    R_old, R_new = (np.triu(rng.normal(size=(m.n_sparse,) * 2)) + 5 * np.eye(m.n_sparse) for _ in range(2))
    path = tmp_path / "gp.h5"
    Potential([m], {14: 0.0, 6: 0.0}, factor=R_old, sparse_jitter=1e-8).save(path)
    potential = Potential.load(path)
    if rewrite == "replaced (save)":
        Potential([m], {14: 0.0, 6: 0.0}, factor=R_new, sparse_jitter=1e-8).save(path)
    else:
        with h5py.File(path, "r+") as f:
            f["gp/R_upper"][...] = R_new[np.triu_indices(m.n_sparse)]
    with pytest.raises(InputError, match="gp.h5.*changed since it was loaded"):
        potential.factor
    np.testing.assert_array_equal(Potential.load(path).factor, R_new)


def test_cached_contraction_follows_a_new_alpha_at_a_reused_address():
    """Potential caches the alpha-contracted Predictor; a new alpha array must be seen even when it
    has the id (address) of the freed array the cache was built from (taken here if it is free)."""
    m = cases()["distance_2b ard_se f0"]
    potential = Potential([m], {14: 0.0, 6: 0.0})
    atoms = structures()[0]
    alpha = m.alpha.copy()
    energy = potential.predict(atoms, gradients=False)["energy"]
    old = id(m.alpha)
    m.alpha = None  # frees the array unless the cache holds it; CPython then hands its address out again
    candidates = [2 * alpha for _ in range(1000)]
    m.alpha = next((a for a in candidates if id(a) == old), candidates[0])
    del candidates
    assert potential.predict(atoms, gradients=False)["energy"] == pytest.approx(2 * energy, rel=1e-12)
    potential.models = [Model(m.descriptor, m.kernel, m.sparse_x, m.sparse_weight, -alpha)]
    assert potential.predict(atoms, gradients=False)["energy"] == pytest.approx(-energy, rel=1e-12)
