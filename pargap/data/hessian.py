"""Hessian training data: from a structure and a reference ASE calculator to gap_fit's convention.

    H_ab = d^2 E / dr_a dr_b by central differences of the calculator's forces (eV/A^2),
    symmetrised and diagonalised; the three translations (zero eigenvalues of any isolated or
    periodic structure) are dropped; the other eigenpairs are written as info ``n_hessian``,
    info ``hessian1..k`` (eigenvalues) and per-atom ``hessian1..k`` (unit eigenvectors, (n, 3)).
"""

import numpy as np


def finite_difference_hessian(atoms, calculator, delta=1e-3):
    """(3n, 3n) Hessian of the calculator's energy, -dF/dr by central differences of step delta (A)."""
    n = len(atoms)
    H = np.zeros((3 * n, 3 * n))
    for a in range(n):
        for c in range(3):
            forces = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[a, c] += sign * delta
                moved.calc = calculator
                forces.append(moved.get_forces().ravel())
            H[3 * a + c] = -(forces[0] - forces[1]) / (2.0 * delta)
    return 0.5 * (H + H.T)


def directional_curvature(atoms, calculator, eigenvector, delta=0.01):
    """e . (F(r0 - D e) - F(r0 + D e)) / (2 D) of the calculator's forces, eV/A^2: the functional a
    Hessian row applies to the GP (pargap.gp.observations.hessian_row), so a baseline ("core")
    potential's contribution to an eigenvalue is subtracted with the same finite difference D (A)
    as the fit uses (``hessian_delta``). eigenvector: (n, 3), unit norm. Equals e.H.e + O(D^2)."""
    e = np.asarray(eigenvector, dtype=float)
    forces = []
    for sign in (-1.0, 1.0):
        moved = atoms.copy()
        moved.positions = atoms.positions + sign * delta * e
        moved.calc = calculator
        forces.append(moved.get_forces())
    return float(np.sum(e * (forces[0] - forces[1])) / (2.0 * delta))


def hessian_data(atoms, calculator, delta=1e-3, n_modes=None):
    """A copy of ``atoms`` labelled with the calculator's energy and Hessian eigenpairs.

    The translations are removed: the eigenvectors of H projected onto the space orthogonal to
    rigid translations, sorted by eigenvalue (ascending); ``n_modes`` keeps the lowest ones."""
    n = len(atoms)
    H = finite_difference_hessian(atoms, calculator, delta)
    T = np.zeros((3 * n, 3))
    for c in range(3):
        T[c::3, c] = 1.0 / np.sqrt(n)
    P = np.eye(3 * n) - T @ T.T  # projector out of the translations
    values, vectors = np.linalg.eigh(P @ H @ P)
    # drop the three translation modes: the eigenvectors with the largest overlap with T
    overlap = np.linalg.norm(T.T @ vectors, axis=0)
    keep = np.sort(np.argsort(overlap)[: 3 * n - 3])
    values, vectors = values[keep], vectors[:, keep]
    if n_modes is not None:
        values, vectors = values[:n_modes], vectors[:, :n_modes]
    labelled = atoms.copy()
    labelled.calc = None
    probe = atoms.copy()
    probe.calc = calculator
    labelled.info["energy"] = probe.get_potential_energy()
    labelled.info["n_hessian"] = len(values)
    for k, (value, vector) in enumerate(zip(values, vectors.T), start=1):
        labelled.info[f"hessian{k}"] = float(value)
        labelled.arrays[f"hessian{k}"] = vector.reshape(n, 3)
    return labelled
