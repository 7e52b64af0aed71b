"""Rows of K_NM: every observation is a linear functional L_n of the energy model.

For a structure with descriptors x_i (weights w_i) and a model with sparse points s_m:

    energy        E        -> sum_i w_i k(x_i, s_m) w_m
    force         F_a      -> -sum_i d/dr_a [w_i k(x_i, s_m)] w_m
    virial        W_kl     -> -sum_g d/dr_{g,k} [w k(x, s_m)] w_m R_{g,l}   (R_g: slot position)
    local energy  eps_a    -> sum_{i centred on a} w_i k(x_i, s_m) w_m
    Hessian       e.H.e    -> e . (F(r0 - D e) - F(r0 + D e)) / (2 D)   (force rows, displaced)

The same rows serve the fit (divided by the noise sigma) and prediction (multiplied by alpha),
so what is fitted is exactly what is predicted. Serial numpy over one structure; no MPI.
"""

from dataclasses import dataclass

import numpy as np

from pargap.gp._contract import EMPTY, accumulate_rows

VIRIAL_COMPONENTS = ((0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2))
"""Independent components (k, l) of the symmetric virial, in gap_fit's row order."""


@dataclass
class ModelRows:
    """Linear maps from the coefficients (M_total,) to the structure's observables.

    energy (M,); local (n_atoms, M) per-atom energies; forces (n_atoms, 3, M) in eV/Angstrom per
    unit alpha; virial (3, 3, M) in eV. ``forces`` and ``virial`` are None without gradients.
    """

    energy: np.ndarray
    local: np.ndarray
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None


def model_rows(atoms, models, gradients=True):
    """Rows of all models for one ase.Atoms, their columns concatenated in model order."""
    parts = [single_model_rows(atoms, m, gradients) for m in models]
    cat = lambda name: (  # noqa: E731
        None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts], axis=-1)
    )
    return ModelRows(cat("energy"), cat("local"), cat("forces"), cat("virial"))


def hessian_row(atoms, models, eigenvector, delta):
    """Row of the Hessian eigenvalue along the unit vector e (n, 3): the central difference of
    force rows, e . (F(r0 - D e) - F(r0 + D e)) / (2 D) ~ e^T H e, no second derivatives needed.
    delta D in Angstrom; returns (M_total,) in eV/A^2 per unit alpha."""
    forces = []
    for sign in (-1.0, 1.0):
        moved = atoms.copy()
        moved.positions = atoms.positions + sign * delta * eigenvector
        forces.append(model_rows(moved, models).forces)
    return np.einsum("ac,acm->m", eigenvector, forces[0] - forces[1]) / (2.0 * delta)


def single_model_rows(atoms, model, gradients=True):
    """Rows of one model (M = model.n_sparse columns) for one structure. A descriptor that can
    (SOAP: ``centre_chunks``) is computed over groups of centres whose gradients take at most
    GRADIENT_CHUNK_BYTES, the rows summed over the groups, so a large structure's descriptor
    gradients are never all in memory."""
    n_atoms = len(atoms)
    M = model.n_sparse
    rows = ModelRows(energy=np.zeros(M), local=np.zeros((n_atoms, M)))
    if gradients:
        rows.forces = np.zeros((n_atoms, 3, M))
        rows.virial = np.zeros((3, 3, M))
    if gradients and hasattr(model.descriptor, "centre_chunks"):
        chunks, neighbours = model.descriptor.centre_chunks(atoms, GRADIENT_CHUNK_BYTES)
        for centres in chunks:
            _add_rows(rows, model.descriptor.compute(atoms, True, centres=centres, neighbours=neighbours), model)
    else:
        _add_rows(rows, model.descriptor.compute(atoms, gradients=gradients), model)
    return rows


def _add_rows(rows, desc, model):
    """Add the rows of the descriptors ``desc`` (with gradients if rows.forces is not None) to ``rows``."""
    M = model.n_sparse
    w_s = model.sparse_weight
    K = model.kernel(desc.x, model.sparse_x)  # (n, M)
    K_tilde = desc.weight[:, None] * K * w_s[None, :]
    rows.energy += K_tilde.sum(0)
    np.add.at(rows.local, desc.centre, K_tilde)
    if rows.forces is None:
        return
    G = len(desc.grad_owner)
    D = desc.x.shape[1]
    metric, A, B = model.kernel.gradient_terms(desc.x, model.sparse_x, K)
    chunk = gradient_chunk(M)
    for start in range(0, G, chunk):
        block = slice(start, min(start + chunk, G))
        owner = desc.grad_owner[block]
        gdX = desc.dx_dr[block] if metric is None else desc.dx_dr[block] * metric
        g = len(owner)
        T = (gdX.reshape(3 * g, D) @ model.sparse_x.T).reshape(g, 3, M)
        u = np.einsum("gcd,gd->gc", gdX, desc.x[owner]) if B is not None else EMPTY
        accumulate_rows(T, u, A, EMPTY if B is None else B, K, desc.weight, np.ascontiguousarray(desc.dw_dr[block]),
                        w_s, owner, desc.grad_atom[block], np.ascontiguousarray(desc.grad_position[block]),
                        rows.forces, rows.virial)


GRADIENT_CHUNK_BYTES = 64 * 2**20


def gradient_chunk(M):
    """Gradient rows handled at once, so that the (rows, 3, M) kernel-gradient block stays ~64 MB."""
    return max(1, GRADIENT_CHUNK_BYTES // (3 * 8 * max(M, 1)))
