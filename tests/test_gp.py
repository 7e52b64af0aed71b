"""The sparse GP as a whole: it equals the full GP when every training descriptor is a sparse point,
and a 2-body GAP recovers the Lennard-Jones pair potential that labelled its data."""

import itertools

import ase.io
import numpy as np
import pytest
from ase import Atoms

from conftest import lj_structures
from pargap.settings.config import settings_from_dict
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log

QUIET = Log(SerialComm(), quiet=True)


def test_sparse_gp_with_all_points_equals_full_gp(tmp_path, rng):
    """Energy-only data, every pair distance a sparse point: alpha's predictions equal the full GP's
    posterior mean k(x*, X) L^T (L K L^T + Lambda)^-1 y, with L the 'pairs in structure' operator."""
    frames = []
    for n in (2, 3, 2, 3, 2):
        pos = np.round(rng.uniform(0, 2.6, (n, 3)), 6)  # exact in the XYZ text
        atoms = Atoms(f"Ar{n}", positions=pos)
        atoms.info["energy"] = float(rng.normal())
        frames.append(atoms)
    path = tmp_path / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    delta, theta, sigma, cutoff = 1.0, 0.3, 0.1, 10.0
    settings = settings_from_dict({
        "at_file": str(path), "e0": 0.0, "default_sigma": [sigma, 1, 1, 0], "sigma_per_atom": False,
        "sparse_jitter": 0.0,
        "gap": [{"descriptor": "distance_2b", "cutoff": cutoff, "cutoff_transition_width": 0.0,
                 "delta": delta, "theta_uniform": theta, "sparse_method": "none"}],
    })
    pot = fit(settings, log=QUIET)

    def pairs(atoms):
        return np.array([atoms.get_distance(i, j) for i, j in itertools.combinations(range(len(atoms)), 2)])

    X = np.concatenate([pairs(a) for a in frames])
    assert pot.models[0].n_sparse == len(X)  # every distinct descriptor is a sparse point
    L = np.zeros((len(frames), len(X)))
    start = 0
    for n, a in enumerate(frames):
        k = len(pairs(a))
        L[n, start:start + k] = 2.0  # gap_fit counts each pair from both ends
        start += k
    kern = lambda a, b: delta**2 * np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / theta**2)  # noqa: E731
    y = np.array([a.info["energy"] for a in frames])
    weights = np.linalg.solve(L @ kern(X, X) @ L.T + sigma**2 * np.eye(len(frames)), y)
    for _ in range(3):
        test = Atoms("Ar3", positions=rng.uniform(0, 2.6, (3, 3)))
        full_gp = 2.0 * kern(pairs(test), X).sum(0) @ L.T @ weights
        assert pot.predict(test, gradients=False)["energy"] == pytest.approx(full_gp, rel=1e-6, abs=1e-8)


def test_two_body_gap_recovers_lennard_jones(tmp_path):
    train = lj_structures(n_bulk=10, n_cluster=8, seed=1)
    test = lj_structures(n_bulk=4, n_cluster=4, seed=2)
    ase.io.write(tmp_path / "train.xyz", train, format="extxyz")
    settings = settings_from_dict({
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": [0.001, 0.01, 0.01, 0.0],
        "sparse_jitter": 1e-8, "rnd_seed": 3,
        "gap": [{"descriptor": "distance_2b", "cutoff": 5.0, "cutoff_transition_width": 3.0 / 2,
                 "delta": 1.0, "theta_uniform": 0.3, "n_sparse": 60, "sparse_method": "uniform"}],
    })
    pot = fit(settings, log=QUIET)
    ref_f = np.concatenate([a.arrays["forces"].ravel() for a in test])
    pred_f = np.concatenate([pot.predict(a)["forces"].ravel() for a in test])
    ref_e = np.array([a.info["energy"] / len(a) for a in test])
    pred_e = np.array([pot.predict(a)["energy"] / len(a) for a in test])
    force_rmse = np.sqrt(np.mean((pred_f - ref_f) ** 2))
    assert force_rmse < 0.02 * ref_f.std(), (force_rmse, ref_f.std())
    assert np.sqrt(np.mean((pred_e - ref_e) ** 2)) < 0.02 * ref_e.std()


def test_species_combinations_absent_from_the_data_are_dropped(tmp_path, rng):
    """CO molecules have C-O pairs only: of the three distance_2b models species expansion makes,
    C-C and O-O have no descriptors; they are dropped and the C-O model fits the Morse-like data."""
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for r in rng.uniform(1.0, 1.5, 12):
        atoms = Atoms("CO", positions=[[0, 0, 0], [0, 0, r]])
        e = 5.0 * (1 - np.exp(-2.0 * (r - 1.13))) ** 2
        f = 20.0 * (1 - np.exp(-2.0 * (r - 1.13))) * np.exp(-2.0 * (r - 1.13))
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=[[0, 0, f], [0, 0, -f]])
        frames.append(atoms)
    ase.io.write(tmp_path / "co.xyz", frames, format="extxyz")
    settings = settings_from_dict({
        "at_file": str(tmp_path / "co.xyz"), "default_sigma": [1e-4, 1e-3, 0.0, 0.0], "e0": 0.0,
        "gap": [{"descriptor": "distance_2b", "cutoff": 2.5, "delta": 1.0, "theta_uniform": 0.3,
                 "n_sparse": 12, "sparse_method": "uniform"}]})
    potential = fit(settings, SerialComm(), Log(SerialComm(), quiet=True))
    assert [(m.descriptor.params()["Z1"], m.descriptor.params()["Z2"]) for m in potential.models] == [(6, 8)]
    test = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.25]])
    expected = 5.0 * (1 - np.exp(-2.0 * (1.25 - 1.13))) ** 2
    assert potential.predict(test)["energy"] == pytest.approx(expected, abs=2e-3)
