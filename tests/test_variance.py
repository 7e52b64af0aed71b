"""The GP predictive variance: the full GP's posterior variance when every training descriptor is a
sparse point, larger far from the training data than on it, and kept through the potential file."""

import itertools

import ase.io
import numpy as np
import pytest
from ase import Atoms

from conftest import lj_structures
from pargap import GAPCalculator
from pargap.settings.config import settings_from_dict
from pargap.errors import InputError
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.potential.potential import Potential
from pargap.progress import Log
from pargap.potential.variance import PredictiveVariance

QUIET = Log(SerialComm(), quiet=True)


def test_variance_equals_full_gp_when_all_points_are_sparse(tmp_path, rng):
    """Energy-only data, every pair distance a sparse point, jitter 1e-10: the variances of the total
    and of the per-atom energies equal the full GP's k** - k*^T L^T (L K L^T + Lambda)^-1 L k*, with
    L the 'pairs in structure' operator (gap_fit counts each pair from both ends: 2 per pair)."""
    frames = []
    for n in (2, 3, 2, 3, 2, 3):
        pos = np.round(rng.uniform(0, 2.6, (n, 3)), 6)  # exact in the XYZ text
        atoms = Atoms(f"Ar{n}", positions=pos)
        atoms.info["energy"] = float(rng.normal())
        frames.append(atoms)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    delta, theta, sigma = 0.7, 0.3, 0.05
    settings = settings_from_dict({
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": [sigma, 1, 1, 0],
        "sigma_per_atom": False, "sparse_jitter": 1e-10,
        "gap": [{"descriptor": "distance_2b", "cutoff": 10.0, "cutoff_transition_width": 0.0,
                 "delta": delta, "theta_uniform": theta, "sparse_method": "none"}],
    })
    variance = PredictiveVariance(fit(settings, log=QUIET))

    def pairs(atoms):
        return [(i, j, atoms.get_distance(i, j)) for i, j in itertools.combinations(range(len(atoms)), 2)]

    X = np.array([r for a in frames for _, _, r in pairs(a)])
    L = np.zeros((len(frames), len(X)))
    start = 0
    for n, a in enumerate(frames):
        L[n, start:start + len(pairs(a))] = 2.0
        start += len(pairs(a))
    kern = lambda a, b: delta**2 * np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / theta**2)  # noqa: E731
    G = np.linalg.inv(L @ kern(X, X) @ L.T + sigma**2 * np.eye(len(frames)))
    for test in (Atoms("Ar3", positions=rng.uniform(0, 2.6, (3, 3))), frames[1], Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 4.5]])):
        p = pairs(test)
        r = np.array([d for _, _, d in p])
        # local energy of atom a: the pairs (a, b) counted once, from a's end
        to_atoms = np.zeros((len(test), len(p)))
        for q, (i, j, _) in enumerate(p):
            to_atoms[i, q] = to_atoms[j, q] = 1.0
        cross = kern(r, X) @ L.T
        pair_cov = kern(r, r) - cross @ G @ cross.T
        local_cov = to_atoms @ pair_cov @ to_atoms.T
        out = variance(test)
        assert out["energy_variance"] == pytest.approx(local_cov.sum(), rel=1e-6, abs=1e-9 * delta**2)
        assert out["energies_variance"] == pytest.approx(np.diag(local_cov), rel=1e-6, abs=1e-9 * delta**2)
    # far beyond all training distances (< 2.6 * sqrt(3)) the variance is the prior's
    far = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 9.0]])
    assert variance(far)["energy_variance"] == pytest.approx(4 * delta**2, rel=1e-6)


@pytest.fixture(scope="module")
def lj_potential(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variance")
    train = lj_structures(n_bulk=6, n_cluster=4, seed=3)
    ase.io.write(folder / "train.xyz", train, format="extxyz")
    settings = settings_from_dict({
        "at_file": str(folder / "train.xyz"), "e0": 0.0, "default_sigma": [0.002, 0.02, 0.02, 0.0],
        "sparse_jitter": 1e-8, "rnd_seed": 3, "gp_file": str(folder / "gap.h5"),
        "gap": [{"descriptor": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.5,
                 "delta": 1.0, "theta_uniform": 0.3, "n_sparse": 30, "sparse_method": "uniform"}],
    })
    return fit(settings, log=QUIET), train, settings


def test_variance_larger_far_from_the_training_data(lj_potential):
    potential, train, _ = lj_potential
    calc = GAPCalculator(potential, variance=True)
    on_data = []
    for atoms in train[:6]:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        on_data.append(calc.results["energies_variance"])
        assert calc.results["energy_variance"] >= 0
    on_data = np.concatenate(on_data)
    # one atom pushed to 1.2 A of another: the training distances start at 1.76 A
    crowded = train[0].copy()
    crowded.positions[1] = crowded.positions[0] + [1.2, 0.0, 0.0]
    local = calc.get_local_energy_variances(crowded)
    assert local[0] > 20 * on_data.max() and local[1] > 20 * on_data.max()
    assert calc.get_energy_variance(crowded) > 20 * np.sqrt(np.mean(on_data))
    # a dimer at a training-like distance is better known than one far inside the repulsive wall,
    # whose variance is nearly the prior's, (2 delta)^2 (two descriptors, weight 1)
    dimer = lambda r: Atoms("Ar2", positions=[[0, 0, 0], [r, 0, 0]])  # noqa: E731
    assert calc.get_energy_variance(dimer(3.6)) < 1e-4 * calc.get_energy_variance(dimer(1.0))
    assert calc.get_energy_variance(dimer(0.5)) == pytest.approx(4.0, rel=1e-3)


def test_variance_from_the_potential_file(lj_potential, tmp_path):
    potential, train, settings = lj_potential
    potential.save(tmp_path / "gap.h5")
    loaded = Potential.load(tmp_path / "gap.h5")
    assert np.allclose(loaded.factor, potential.factor, rtol=0, atol=0)
    assert loaded.sparse_jitter == settings.sparse_jitter
    atoms = train[1].copy()
    mine = PredictiveVariance(potential)(atoms)
    theirs = GAPCalculator(tmp_path / "gap.h5").get_local_energy_variances(atoms)
    assert np.array_equal(theirs, mine["energies_variance"])
    # the energies are unaffected by asking for the variance
    plain = GAPCalculator(tmp_path / "gap.h5")
    assert plain.get_potential_energy(atoms) == GAPCalculator(tmp_path / "gap.h5", variance=True).get_potential_energy(atoms)


def test_store_covariance_false_omits_the_factor(lj_potential, tmp_path):
    _, train, settings = lj_potential
    import dataclasses

    potential = fit(dataclasses.replace(settings, store_covariance=False), log=QUIET)
    assert potential.factor is None
    potential.save(tmp_path / "small.h5")
    calc = GAPCalculator(tmp_path / "small.h5")
    calc.get_potential_energy(train[0])
    with pytest.raises(InputError, match="store_covariance"):
        calc.get_energy_variance(train[0])


def test_stored_factor_is_the_posterior_precision(tmp_path):
    """Two gap entries, energies, forces and virials: R^T R equals K_MM + K_MN Lambda^-1 K_NM built
    densely from model_rows, so (R^T R)^-1 is the coefficients' posterior covariance."""
    import math

    import scipy.linalg

    from pargap.gp.observations import VIRIAL_COMPONENTS, model_rows

    frames = lj_structures(n_bulk=3, n_cluster=3, seed=8)
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    frames = ase.io.read(tmp_path / "train.xyz", ":")
    sE, sF, sV = 0.01, 0.1, 0.3
    settings = settings_from_dict({
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": [sE, sF, sV, 0.0],
        "sparse_jitter": 1e-6, "rnd_seed": 2,
        "gap": [{"descriptor": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 1.5, "delta": 1.0,
                 "theta_uniform": 0.5, "n_sparse": 10, "sparse_method": "uniform"},
                {"descriptor": "distance_2b", "cutoff": 3.5, "cutoff_transition_width": 0.5, "delta": 0.3,
                 "theta_uniform": 0.4, "n_sparse": 6, "sparse_method": "random"}],
    })
    potential = fit(settings, log=QUIET)
    rows, sigma = [], []
    for atoms in frames:
        n = len(atoms)
        r = model_rows(atoms, potential.models)
        rows += [r.energy[None, :], r.forces.reshape(3 * n, -1)]
        sigma += [[sE * math.sqrt(n)], np.full(3 * n, sF)]
        if atoms.pbc.all():
            rows.append(np.array([r.virial[k, l] for k, l in VIRIAL_COMPONENTS]))
            sigma.append(np.full(6, sV * math.sqrt(n)))
    A = np.vstack(rows) / np.concatenate(sigma)[:, None]
    K_mm = scipy.linalg.block_diag(*[m.covariance_sparse(settings.sparse_jitter) for m in potential.models])
    expected = K_mm + A.T @ A
    R = potential.factor
    assert R.shape == (16, 16) and np.allclose(R, np.triu(R))
    assert np.allclose(R.T @ R, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
