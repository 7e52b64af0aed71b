"""The GP predictive variance of the energy and of the local (per-atom) energies.

The fit's posterior on the coefficients is alpha ~ N(alpha_hat, (R^T R)^-1), with R the (M, M)
QR factor of A = [Lambda^-1/2 K_NM ; U] (R^T R = K_MM + K_MN Lambda^-1 K_NM, K_MM = U^T U with
the sparse jitter). A predicted quantity L f (the energy: the sum over all descriptors of the
structure; the local energy of atom a: the sum over the descriptors centred on a) has the row
k* = L K(., S) (M,) and the prior variance k** = L K L^T. Under the sparse GP (DTC):

    var = k** - k*^T K_MM^-1 k* + k*^T (R^T R)^-1 k*
        = k** - |U^-T k*|^2 + |R^-T k*|^2                                 (eV^2)

The first two terms are the prior variance the sparse points cannot explain (zero when the
descriptors are sparse points), the last the posterior variance of the coefficients. With every
training descriptor a sparse point (and no jitter) this is the full GP's posterior variance.
delta^2 is inside k, the noise sigmas inside R. It is the variance of the noise-free energy.
Models are independent GPs, so k** sums over models and k* concatenates their columns.
"""

import numpy as np
import scipy.linalg
import scipy.sparse

from pargap.errors import InputError
from pargap.gp.model import cholesky_factor

CHUNK_ENTRIES = 4_000_000
"""Descriptor-pair kernel entries evaluated at once for k** (about 32 MB)."""


class PredictiveVariance:
    """Predictive variances of a Potential that carries its fit's factor (``potential.factor``)."""

    def __init__(self, potential):
        if potential.factor is None:
            raise InputError("this potential has no GP factor (/gp) for the predictive variance: fit it "
                             "with store_covariance = true and solver = \"tsqr\" (or \"auto\" when TSQR is "
                             "chosen; the ScaLAPACK solver stores none)")
        M = sum(m.n_sparse for m in potential.models)
        if potential.factor.shape != (M, M):
            raise InputError(f"the GP factor is {potential.factor.shape}, but the models have {M} sparse points")
        self.potential = potential
        self.R = np.asarray(potential.factor, dtype=float)
        jitter = potential.sparse_jitter or 0.0
        self.U = scipy.linalg.block_diag(*[cholesky_factor(m.covariance_sparse(jitter)) for m in potential.models])

    def local_covariance(self, atoms):
        """Posterior covariance (n_atoms, n_atoms) of the local energies (eV^2)."""
        self.potential.baseline_energy(atoms.numbers)  # raises for unknown species
        n = len(atoms)
        rows, prior = [], np.zeros((n, n))
        for m in self.potential.models:
            local, kss = _model_prior(atoms, m)
            rows.append(local)
            prior += kss
        P = np.concatenate(rows, axis=1) if rows else np.zeros((n, 0))
        V_prior = scipy.linalg.solve_triangular(self.U, P.T, trans="T", lower=False, check_finite=False)
        V_post = scipy.linalg.solve_triangular(self.R, P.T, trans="T", lower=False, check_finite=False)
        return prior - V_prior.T @ V_prior + V_post.T @ V_post

    def __call__(self, atoms):
        """{"energy_variance": eV^2, "energies_variance": (n_atoms,) eV^2}."""
        C = self.local_covariance(atoms)
        return {"energy_variance": float(C.sum()), "energies_variance": np.diag(C).copy()}


def _model_prior(atoms, model):
    """One model's local-energy rows (n_atoms, M_k) and prior covariance C^T K_xx C (n_atoms,
    n_atoms) of the local energies, K_xx = w_i k(x_i, x_j) w_j over the structure's descriptors."""
    n = len(atoms)
    d = model.descriptor.compute(atoms, gradients=False)
    k_star = d.weight[:, None] * model.kernel(d.x, model.sparse_x) * model.sparse_weight[None, :]
    local = np.zeros((n, model.n_sparse))
    np.add.at(local, d.centre, k_star)
    prior = np.zeros((n, n))
    count = len(d)
    if count == 0:
        return local, prior
    C = scipy.sparse.csr_matrix((np.ones(count), (np.arange(count), d.centre)), shape=(count, n))
    step = max(1, CHUNK_ENTRIES // count)
    for start in range(0, count, step):
        part = slice(start, min(start + step, count))
        K = d.weight[part, None] * model.kernel(d.x[part], d.x) * d.weight[None, :]
        prior += (C[part].T @ (C.T @ K.T).T)
    return local, prior


__all__ = ["PredictiveVariance"]
