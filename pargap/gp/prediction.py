"""Prediction with the coefficients contracted first: energies, forces and virials of one structure
in O(n M D + G D) per model, no (n_atoms, 3, M) array.

For a model with sparse points s_m, weights w_m and coefficients alpha_m, let beta_m = alpha_m w_m.
Per descriptor x_i (weight w_i):

    eps_i = sum_m beta_m k(x_i, s_m)                               (n,)    eV
    g_i   = sum_m beta_m grad_x k(x_i, s_m)                        (n, D)  eV per descriptor unit

(``kernel.contraction``: O(M D) per descriptor, O(D^2) for dot_product with zeta = 2). The
local energy is w_i eps_i; for a gradient row (descriptor i, atom a, slot position R) the
derivative of w_i eps_i is

    d_gc = w_i g_i . dx_i/dr_gc + eps_i dw_i/dr_gc                 (G, 3)  eV/A

and F_a = -sum_{g of a} d_g, W_kl = -sum_g d_gk R_gl (O(G D) in all). This is what QUIP's
IPModel_GAP does (gp_predict's gradPredict contracted with the descriptor gradients), and, term by
term, the rows of :mod:`pargap.gp.observations` multiplied by alpha. Serial numpy; no MPI.
"""

from dataclasses import dataclass

import numpy as np

CHUNK_ENTRIES = 2_000_000
"""Descriptor x sparse-point kernel entries held at once (about 16 MB per array)."""


@dataclass
class Prediction:
    """energy (eV), energies (n_atoms,) eV, forces (n_atoms, 3) eV/A and virial (3, 3) eV (not
    symmetrised); forces and virial None without gradients. Model terms only (no e0, no core)."""

    energy: float
    energies: np.ndarray
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None


class Predictor:
    """The models of a potential, their coefficients contracted once (``kernel.contraction``);
    calling it on an ase.Atoms gives the models' :class:`Prediction`. The contraction holds the
    models' arrays as they were: give a model new arrays (not in-place edits) and ask :meth:`is_for`."""

    def __init__(self, models):
        self.models = list(models)
        self.contractions = [m.kernel.contraction(m.sparse_x, np.asarray(m.alpha, dtype=float) * m.sparse_weight)
                             for m in self.models]
        self._sources = [_sources(m) for m in self.models]  # held, so no new object can take their ids

    def is_for(self, models):
        """Whether this predictor was contracted from these very models, coefficients, sparse points,
        weights and kernels (the same objects, not equal ones)."""
        current = [_sources(m) for m in models]
        return len(current) == len(self._sources) and all(
            a is b for old, new in zip(self._sources, current) for a, b in zip(old, new))

    def __call__(self, atoms, gradients=True):
        n = len(atoms)
        out = Prediction(0.0, np.zeros(n), np.zeros((n, 3)) if gradients else None,
                         np.zeros((3, 3)) if gradients else None)
        for model, contract in zip(self.models, self.contractions):
            _add_model(out, atoms, model, contract, gradients)
        out.energy = float(out.energies.sum())
        return out


def _sources(model):
    """The objects a model's contraction is computed from."""
    return model, model.alpha, model.sparse_x, model.sparse_weight, model.kernel


def _add_model(out, atoms, model, contract, gradients):
    """Add one model's local energies (and forces, virial) into ``out``."""
    desc = model.descriptor.compute(atoms, gradients=gradients)
    n = len(desc)
    if n == 0:
        return
    eps = np.empty(n)
    grad = np.empty((n, desc.x.shape[1])) if gradients else None
    chunk = max(1, CHUNK_ENTRIES // max(model.n_sparse, 1))
    for start in range(0, n, chunk):
        block = slice(start, min(start + chunk, n))
        e, g = contract(desc.x[block], gradients)
        eps[block] = e
        if gradients:
            grad[block] = g
    np.add.at(out.energies, desc.centre, desc.weight * eps)
    if not gradients:
        return
    owner = desc.grad_owner
    d = desc.weight[owner, None] * np.einsum("gcd,gd->gc", desc.dx_dr, grad[owner])
    d += eps[owner, None] * desc.dw_dr
    np.add.at(out.forces, desc.grad_atom, -d)
    out.virial -= d.T @ desc.grad_position
