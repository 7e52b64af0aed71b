"""e0_method = "fit": per-species e0 from a least-squares fit of total energies on species counts,
recovered from synthetic data; the warning for e0_method = "average" on data of varied composition."""

import ase.io
import numpy as np
import pytest
from ase import Atoms

from pargap.fitting.e0 import compute_e0, composition_varies, fitted_e0
from pargap.fitting.fit import fit
from pargap.parallel import SerialComm
from pargap.progress import Log
from pargap.settings.config import settings_from_dict

E0 = {1: -13.6, 6: -1029.5, 8: -2041.2}  # eV, the truth of the synthetic energies


def molecules(rng, n=30, noise=1e-3):
    """Random H/C/O clusters with E = sum_Z n_Z E0[Z] + Gaussian noise (eV), atoms 1.6 A or more apart."""
    frames = []
    for _ in range(n):
        numbers = rng.choice(list(E0), size=rng.integers(2, 9))
        positions = [np.zeros(3)]
        while len(positions) < len(numbers):
            p = rng.normal(0, 2.5, 3)
            if min(np.linalg.norm(p - q) for q in positions) > 1.6:
                positions.append(p)
        atoms = Atoms(numbers=numbers, positions=positions)
        atoms.info["energy"] = sum(E0[int(z)] for z in numbers) + rng.normal(0, noise)
        frames.append(atoms)
    return frames


def settings(path, method):
    return settings_from_dict({
        "at_file": str(path), "default_sigma": [0.01, 0.1, 0.1, 0.0], "e0_method": method, "rnd_seed": 1,
        "gap": [{"descriptor": "distance_2b", "cutoff": 3.0, "delta": 0.01, "theta_uniform": 0.5,
                 "n_sparse": 3, "sparse_method": "uniform"}],
    })


def test_fitted_e0_recovers_known_values_and_handles_one_stoichiometry(rng):
    frames = molecules(rng)
    species = sorted(E0)
    counts = np.array([[np.sum(a.numbers == z) for z in species] for a in frames])
    energies = np.array([a.info["energy"] for a in frames])
    e0, residual, rank = fitted_e0(energies, counts)
    assert rank == 3 and e0 == pytest.approx([E0[z] for z in species], abs=2e-3)
    assert np.abs(residual).max() < 5e-3  # the 1 meV noise, per atom
    assert composition_varies(counts)
    # one stoichiometry (a molecule): only sum_z n_z e0_z is fixed, and it is the mean energy
    one = np.tile([6, 2, 1], (4, 1))
    e0, _, rank = fitted_e0(np.array([-10.0, -10.2, -9.8, -10.0]), one)
    assert rank == 1 and one[0] @ e0 == pytest.approx(-10.0) and not composition_varies(one)


def test_fit_uses_fitted_e0_and_average_warns_on_varied_composition(rng, tmp_path):
    ase.io.write(tmp_path / "mols.xyz", molecules(rng), format="extxyz")
    lines = []

    class Capture(Log):
        def __call__(self, message):
            lines.append(message)

    comm = SerialComm()
    potential = fit(settings(tmp_path / "mols.xyz", "fit"), comm, Capture(comm))
    assert {int(z): v for z, v in potential.e0.items()} == pytest.approx(E0, abs=2e-3)
    assert any(line.startswith("e0 fitted on 30 total energies") for line in lines)
    assert not any("warning" in line for line in lines)
    lines.clear()
    s = settings(tmp_path / "mols.xyz", "average")
    from pargap.fitting.structures import load_structures

    structures, _ = load_structures(comm, s, Capture(comm))
    e0 = compute_e0(comm, s, structures, sorted(E0), log=Capture(comm))
    assert len(set(e0.values())) == 1
    assert any("warning: e0_method=average" in line and "e0_method=fit" in line for line in lines)
