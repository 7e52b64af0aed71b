"""Shared fixtures: small labelled structure sets and a model with random coefficients."""

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.cluster import Icosahedron

from pargap.descriptors import Distance2b
from pargap.gp.kernels import SquaredExponential
from pargap.gp.model import Model

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


def small_lj_frames(forces=True):
    """11 small Ar structures for command-line tests: 0 is an isolated atom (energy 0), then rattled
    fcc cells (4 and 8 atoms) and 3-atom clusters; energy (and forces) from ASE's smooth
    Lennard-Jones frozen in a SinglePointCalculator, so extxyz gets the keys energy and forces."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = [Atoms("Ar", positions=[[0.0, 0.0, 0.0]], pbc=False)]
    for k in range(6):
        atoms = bulk("Ar", "fcc", a=5.3, cubic=True)
        if k % 3 == 1:
            atoms = atoms.repeat((2, 1, 1))
        atoms.rattle(0.2, seed=k)
        frames.append(atoms)
    for k in range(4):
        frames.append(Atoms("Ar3", positions=[[0, 0, 0], [3.0 + 0.3 * k, 0, 0], [1.5, 2.8, 0.2 * k]], pbc=False))
    for atoms in frames:
        atoms.calc = LennardJones(**LJ)
        results = {"energy": atoms.get_potential_energy()}
        if forces:
            results["forces"] = atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, **results)
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


JOB_TIMEOUT = 180


def _session_members(sid):
    """Pids of the processes in session ``sid`` (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def _kill_job(proc):
    """End a timed-out job started in its own session: SIGTERM to mpirun (it stops its ranks),
    then SIGKILL to whatever is left in the session."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    for pid in _session_members(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def run_job(cmd, cwd=None, timeout=JOB_TIMEOUT):
    """Run a command (mpirun or a console script) -> CompletedProcess. On a timeout the whole job
    is killed and pytest fails the test: a hanging rank never hangs the suite."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_job(proc)
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def displaced(atoms, a, c, h):
    """The two copies of ``atoms`` with coordinate c of atom a moved by +h and -h (Angstrom)."""
    out = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[a, c] += sign * h
        out.append(moved)
    return out


def strained(atoms, k, l, h):
    """The two copies of ``atoms`` under the homogeneous strain +-h e_kl: cell and positions are
    mapped by (I + eps), so that d/d eps_kl of any property is the virial-type contraction."""
    out = []
    for sign in (1, -1):
        F = np.eye(3)
        F[k, l] += sign * h
        moved = atoms.copy()
        moved.set_cell(atoms.cell[:] @ F.T, scale_atoms=True)
        out.append(moved)
    return out
