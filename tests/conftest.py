"""Shared fixtures: small labelled structure sets and a model with random coefficients."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from pargap.descriptors import Distance2b
from pargap.kernels import SquaredExponential
from pargap.model import Model

LJ = dict(sigma=2.0, epsilon=0.5, rc=5.0, smooth=True)


def lj_structures(n_bulk=8, n_cluster=6, seed=0, rattle=0.12):
    """Rattled fcc bulk cells (strained) and small clusters labelled by ASE's smooth Lennard-Jones."""
    rng = np.random.default_rng(seed)
    frames = []
    a0 = 2.0 * 2 ** (1 / 6) * np.sqrt(2)  # fcc lattice constant at the LJ minimum distance
    for k in range(n_bulk):
        atoms = bulk("Ar", "fcc", a=a0 * rng.uniform(0.97, 1.05), cubic=True)
        if k % 2:
            atoms = atoms.repeat((2, 1, 1))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    for k in range(n_cluster):
        atoms = Icosahedron("Ar", 2, latticeconstant=a0 * rng.uniform(0.98, 1.04)) if k % 3 == 0 else \
            _random_cluster(rng, 3 + k % 4)
        atoms.rattle(rattle, seed=int(rng.integers(1 << 30)))
        frames.append(atoms)
    for atoms in frames:
        atoms.calc = LennardJones(**LJ)
        atoms.info["energy"] = atoms.get_potential_energy()
        atoms.arrays["forces"] = atoms.get_forces()
        if atoms.pbc.all():
            atoms.info["virial"] = -atoms.get_stress(voigt=False) * atoms.get_volume()
        atoms.calc = None
    return frames


def _random_cluster(rng, n):
    from ase import Atoms

    pos = [np.zeros(3)]
    while len(pos) < n:
        p = rng.normal(0, 2.0, 3)
        if min(np.linalg.norm(p - q) for q in pos) > 2.0:
            pos.append(p)
    return Atoms("Ar" * n, positions=pos)


def random_model(rng, Z1=0, Z2=0, M=12, cutoff=4.0, width=1.0, theta=0.4):
    """A distance_2b model with random sparse points and coefficients, for property tests."""
    sparse = np.sort(rng.uniform(1.5, cutoff, M))[:, None]
    from pargap.descriptors.base import cutoff_function

    w, _ = cutoff_function(sparse[:, 0], cutoff, width)
    return Model(Distance2b(cutoff=cutoff, cutoff_transition_width=width, Z1=Z1, Z2=Z2),
                 SquaredExponential(delta=1.0, theta=[theta]), sparse, w, rng.normal(0, 1, M))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
