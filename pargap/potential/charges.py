"""Charges and electrostatic potential predicted by fitted charge models (see :mod:`pargap.fitting.charges`).

q_a = sum_{i centred on a} q(x_i) = Q @ alpha with Q the per-atom ("local") rows of
:mod:`pargap.gp.observations`; the ESP of point charges is Phi(r) = C sum_a q_a / |r - r_a|,
C = COULOMB. Positions in Angstrom, charges in e, ESP in volts.
"""

import numpy as np

from pargap.errors import PargapError

COULOMB = 14.399645
"""e / (4 pi eps0 Angstrom) in volts: the ESP (V) of one elementary charge at 1 Angstrom."""


def coulomb_matrix(points, positions):
    """C / |r_k - r_a|, (K, n) in V/e, for points (K, 3) and atom positions (n, 3) in Angstrom."""
    d = np.linalg.norm(np.asarray(points)[:, None, :] - np.asarray(positions)[None, :, :], axis=-1)
    return COULOMB / d


def electrostatic_potential(points, positions, charges):
    """Phi(r_k) = C sum_a q_a / |r_k - r_a|, (K,) in V, of point charges q (n,) e."""
    return coulomb_matrix(points, positions) @ np.asarray(charges, dtype=float)


def charge_rows(atoms, models):
    """Per-atom charge rows Q (n_atoms, M_total): q = Q @ alpha, columns in model order."""
    from pargap.gp.observations import model_rows

    if not models:
        return np.zeros((len(atoms), 0))
    return model_rows(atoms, models, gradients=False).local


def predict_charges(atoms, models, total_charge=None):
    """Atomic charges (n,) in e from fitted charge models (an empty list gives zeros).

    total_charge (e): if given, the charges are made to sum to it exactly by conditioning the
    GP prior of the charges on their sum: q <- q + C 1 (Q - 1.q) / (1.C.1), with C the prior
    covariance of the atomic charges (:func:`charge_prior_covariance`). The excess is thus shared
    out in proportion to each atom's prior covariance with the total: among atoms of one species
    alike, more to species with more (and more similar) atoms, none across species models. The
    fit's own total-charge rows hold the training structures to their totals; this is for
    molecules unlike the training ones, where nothing else conserves the charge."""
    if not models:
        return np.zeros(len(atoms))
    q = charge_rows(atoms, models) @ np.concatenate([m.alpha for m in models])
    if total_charge is None:
        return q
    c = charge_prior_covariance(atoms, models).sum(1)
    if not c.sum() > 0:
        raise PargapError("cannot impose the total charge: the charge models' prior covariance is zero here")
    return q + c * (float(total_charge) - q.sum()) / c.sum()


def charge_prior_covariance(atoms, models):
    """Prior covariance of the atomic charges, (n, n) in e^2:
    cov(q_a, q_b) = sum_models sum_{i on a, j on b} w_i k(x_i, x_j) w_j (descriptors i centred on a)."""
    n = len(atoms)
    C = np.zeros((n, n))
    for m in models:
        d = m.descriptor.compute(atoms, gradients=False)
        if len(d) == 0:
            continue
        P = np.zeros((n, len(d)))
        P[d.centre, np.arange(len(d))] = d.weight
        C += P @ m.kernel(d.x) @ P.T
    return C
