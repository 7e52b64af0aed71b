"""Learning from Hessian eigenvalues (the talk's toy models): a GP taught the energy and the
curvature at a minimum reproduces the curvature, through rows that are central differences of
force rows along the eigenvector."""

import ase.io
import numpy as np
import pytest
from ase import Atoms

from pargap.potential.calculator import GAPCalculator
from pargap.settings.config import settings_from_dict
from pargap.fitting.fit import fit
from pargap.gp.observations import hessian_row
from pargap.parallel import SerialComm
from pargap.progress import Log

QUIET = Log(SerialComm(), quiet=True)
STRETCH = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]) / np.sqrt(2.0)


def dimer(r, energy, eigenvalue):
    """Ar2 along x with its energy and the Hessian eigenvalue of the stretch in gap_fit's keys.
    For a pair energy E(r), the stretch eigenvector (-x, x)/sqrt(2) has eigenvalue 2 E''(r)."""
    atoms = Atoms("Ar2", positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]])
    atoms.info["energy"] = energy
    atoms.info["n_hessian"] = 1
    atoms.info["hessian1"] = eigenvalue
    atoms.arrays["hessian1"] = STRETCH.copy()
    return atoms


def fit_dimers(tmp_path, frames, sparse_r):
    ase.io.write(tmp_path / "train.xyz", frames, format="extxyz")
    np.savetxt(tmp_path / "sparse.txt", np.column_stack([np.ones(len(sparse_r)), sparse_r]).ravel())
    settings = settings_from_dict({
        "at_file": str(tmp_path / "train.xyz"), "e0": 0.0, "default_sigma": [1e-5, 1.0, 1.0, 1e-5],
        "sigma_per_atom": False, "sparse_jitter": 1e-10, "hessian_delta": 0.01,
        "gap": [{"descriptor": "distance_2b", "cutoff": 6.0, "cutoff_transition_width": 0.5, "delta": 1.0,
                 "theta_uniform": 0.4, "sparse_method": "file", "sparse_file": str(tmp_path / "sparse.txt")}],
    })
    return fit(settings, log=QUIET)


def pair_curvature(potential, r, h=1e-3):
    """E''(r) of the fitted dimer energy, by a fine central difference of energies."""
    e = []
    for x in (r - h, r, r + h):
        atoms = Atoms("Ar2", positions=[[0, 0, 0], [x, 0, 0]])
        atoms.calc = GAPCalculator(potential)
        e.append(atoms.get_potential_energy())
    return (e[0] - 2 * e[1] + e[2]) / h**2


def test_xyz_round_trip_of_the_hessian_convention(tmp_path):
    ase.io.write(tmp_path / "d.xyz", [dimer(2.5, 0.0, 6.0)], format="extxyz")
    back = ase.io.read(tmp_path / "d.xyz")
    assert back.info["hessian1"] == 6.0
    np.testing.assert_allclose(back.arrays["hessian1"], STRETCH)


def test_harmonic_spring_curvature_is_learned_from_one_eigenvalue(tmp_path):
    """E = k/2 (r - r0)^2: one teaching point at the minimum, energy 0 and eigenvalue 2k."""
    k, r0 = 3.0, 2.5
    pot = fit_dimers(tmp_path, [dimer(r0, 0.0, 2 * k)], np.linspace(r0 - 0.6, r0 + 0.6, 7))
    assert pot.predict(Atoms("Ar2", positions=[[0, 0, 0], [r0, 0, 0]]), gradients=False)["energy"] == \
        pytest.approx(0.0, abs=1e-3)
    # the taught eigenvalue is reproduced by the very rows the fit used ...
    row = hessian_row(Atoms("Ar2", positions=[[0, 0, 0], [r0, 0, 0]]), pot.models, STRETCH, 0.01)
    assert row @ pot.alpha == pytest.approx(2 * k, rel=1e-4)
    # ... and the fitted pair energy has the spring's curvature, to the finite-difference error of D
    assert pair_curvature(pot, r0) == pytest.approx(k, rel=2e-3)


def test_sinusoidal_spring_two_minima_two_curvatures(tmp_path):
    """E = A (1 - cos(2 pi (r - r1) / L)) has minima at r1 and r1 + L, both of curvature
    A (2 pi / L)^2; teaching both minima reproduces both curvatures."""
    A, L, r1 = 0.2, 1.0, 2.3
    kappa = A * (2 * np.pi / L) ** 2
    frames = [dimer(r1, 0.0, 2 * kappa), dimer(r1 + L, 0.0, 2 * kappa)]
    pot = fit_dimers(tmp_path, frames, np.linspace(r1 - 0.5, r1 + L + 0.5, 13))
    for r in (r1, r1 + L):
        assert pair_curvature(pot, r) == pytest.approx(kappa, rel=5e-3)


def test_hessian_data_from_a_calculator():
    """An LJ trimer: 9 - 3 = 6 modes (rotations included, translations dropped); the eigenpairs
    satisfy H e = lambda e for the finite-difference Hessian, and the stretch of a dimer has the
    analytic eigenvalue 2 E''(r)."""
    from ase.calculators.lj import LennardJones

    from pargap.data.hessian import finite_difference_hessian, hessian_data

    calc = LennardJones(sigma=2.0, epsilon=0.5, rc=6.0)
    trimer = Atoms("Ar3", positions=[[0, 0, 0], [2.3, 0, 0], [1.0, 2.0, 0.3]])
    data = hessian_data(trimer, calc)
    H = finite_difference_hessian(trimer, calc)
    assert data.info["n_hessian"] == 6
    for k in range(1, 7):
        e = data.arrays[f"hessian{k}"].ravel()
        np.testing.assert_allclose(H @ e, data.info[f"hessian{k}"] * e, atol=1e-5 * np.abs(H).max())
        np.testing.assert_allclose(e.reshape(3, 3).sum(0), 0.0, atol=1e-10)  # no translation
    r = 2.4
    d = hessian_data(Atoms("Ar2", positions=[[0, 0, 0], [r, 0, 0]]), calc)
    s6 = (2.0 / r) ** 6
    second = 4 * 0.5 * (156 * s6**2 - 42 * s6) / r**2  # E''(r) of LJ
    assert max(d.info[f"hessian{k}"] for k in range(1, 4)) == pytest.approx(2 * second, rel=1e-4)  # FD step 1e-3
