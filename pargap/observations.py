"""Rows of K_NM: every observation is a linear functional L_n of the energy model.

For a structure with descriptors x_i (weights w_i) and a model with sparse points s_m:

    energy        E        -> sum_i w_i k(x_i, s_m) w_m
    force         F_a      -> -sum_i d/dr_a [w_i k(x_i, s_m)] w_m
    virial        W_kl     -> -sum_g d/dr_{g,k} [w k(x, s_m)] w_m R_{g,l}   (R_g: slot position)
    local energy  eps_a    -> sum_{i centred on a} w_i k(x_i, s_m) w_m

The same rows serve the fit (divided by the noise sigma) and prediction (multiplied by alpha),
so what is fitted is exactly what is predicted. Serial numpy over one structure; no MPI.
"""

from dataclasses import dataclass

import numpy as np
import scipy.sparse

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


def single_model_rows(atoms, model, gradients=True):
    """Rows of one model (M = model.n_sparse columns) for one structure."""
    n_atoms = len(atoms)
    M = model.n_sparse
    desc = model.descriptor.compute(atoms, gradients=gradients)
    w_s = model.sparse_weight
    K = model.kernel(desc.x, model.sparse_x)  # (n, M)
    K_tilde = desc.weight[:, None] * K * w_s[None, :]
    local = np.zeros((n_atoms, M))
    np.add.at(local, desc.centre, K_tilde)
    rows = ModelRows(energy=K_tilde.sum(0), local=local)
    if not gradients:
        return rows
    G = len(desc.grad_owner)
    rows.forces = np.zeros((n_atoms, 3, M))
    rows.virial = np.zeros((3, 3, M))
    for start in range(0, G, gradient_chunk(M)):
        block = slice(start, min(start + gradient_chunk(M), G))
        owner = desc.grad_owner[block]
        # d/dr_g [w k(x, s) w_s] = w_s [w (grad_x k . dx/dr_g) + k dw/dr_g], shape (g, 3, M)
        dK = model.kernel.gradient_dot(desc.x, model.sparse_x, desc.dx_dr[block], owner, K=K)
        dK *= desc.weight[owner][:, None, None]
        dK += K[owner][:, None, :] * desc.dw_dr[block][:, :, None]
        dK *= w_s[None, None, :]
        g = len(owner)
        to_atoms = scipy.sparse.csr_matrix(
            (np.ones(g), (desc.grad_atom[block], np.arange(g))), shape=(n_atoms, g)
        )
        rows.forces -= (to_atoms @ dK.reshape(g, 3 * M)).reshape(n_atoms, 3, M)
        rows.virial -= np.einsum("gkm,gl->klm", dK, desc.grad_position[block])
    return rows


GRADIENT_CHUNK_BYTES = 64 * 2**20


def gradient_chunk(M):
    """Gradient rows handled at once, so that the (rows, 3, M) kernel-gradient block stays ~64 MB."""
    return max(1, GRADIENT_CHUNK_BYTES // (3 * 8 * max(M, 1)))
