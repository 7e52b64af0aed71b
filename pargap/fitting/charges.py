"""Environment-dependent atomic charges: a sparse GP fitted to the electrostatic potential (ESP).

The local quantity of a charge model is the charge of an atom, q_a = sum_{i centred on a} q(x_i),
with q(x) = sum_m alpha_m w(x) k(x, s_m) w_m the same sparse GP as an energy model (its ``delta``
is a charge scale, e). Its observations are linear functionals of the charges (DESIGN.md section 2):

    ESP at point r_k      Phi(r_k) = C sum_a q_a / |r_k - r_a|   -> row  C sum_a Q_am / |r_k - r_a|
    total charge          Q        = sum_a q_a                   -> row  sum_a Q_am

where Q_am = sum_{i centred on a} w_i k(x_i, s_m) w_m are the per-atom ("local") rows of
:mod:`pargap.gp.observations` and C = COULOMB = e / (4 pi eps0 Angstrom) = 14.399645 V, so that
positions and points are in Angstrom, charges in e and the ESP in volts. Each row is divided by
its noise (``esp_sigma`` in V, ``total_charge_sigma`` in e; a small total-charge sigma makes the
total charge a soft constraint). Charge models are a GP of their own (own sparse points, own
K_MM prior and alpha), solved by the same distributed QR as the energy models.

The data are read by :mod:`pargap.data.esp`; charges and the ESP are predicted by
:mod:`pargap.potential.charges`. The row code here is serial numpy over one rank's structures;
:func:`fit_charge_models` is the thin MPI driver called from :mod:`pargap.fitting.fit`.
"""

import dataclasses

import numpy as np

from pargap.errors import InputError
from pargap.fitting.models import sparse_models
from pargap.fitting.output import provenance
from pargap.fitting.rows import fold_rows, row_block_rows
from pargap.fitting.scan import data_hash as file_data_hash
from pargap.fitting.species import expand_models, species_order
from pargap.fitting.structures import load_structures
from pargap.fitting.weights import solve_weights
from pargap.linalg.factor import RowFactor
from pargap.parallel import collective
from pargap.potential.charges import charge_rows, coulomb_matrix
from pargap.potential.potential import Potential


def charge_covariance_rows(structures, models, file=None):
    """This rank's rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y] of the charge GP, (n_p, M+1),
    Fortran-ordered: per structure (with ``charges`` observations), its ESP rows
    C sum_a Q_am / |r_k - r_a| / sigma_esp (target Phi_k / sigma_esp, V) then its total-charge
    row sum_a Q_am / sigma_tc (target Q / sigma_tc, e)."""
    observed = [s for s in structures if getattr(s, "charges", None) is not None]
    n_rows = sum(s.charges.n_rows for s in observed)
    M = sum(m.n_sparse for m in models)
    block = np.empty((n_rows, M + 1), order="F")
    row = 0
    for s in observed:
        c = s.charges
        Q = charge_rows(s.atoms, models)
        K = len(c.esp)
        if K:
            block[row:row + K, :M] = coulomb_matrix(c.points, s.atoms.positions) @ Q / c.sigma_esp
            block[row:row + K, M] = c.esp / c.sigma_esp
        row += K
        if c.total_charge is not None:
            block[row, :M] = Q.sum(0) / c.sigma_total_charge
            block[row, M] = c.total_charge / c.sigma_total_charge
            row += 1
        if not np.all(np.isfinite(block[row - c.n_rows:row])):
            raise InputError("its charge-model rows are not finite", file=file, structure=s.index)
    assert row == n_rows
    return block


# ---- the fit (MPI edge) ------------------------------------------------------------------------

SEED_OFFSET = 1000
"""Charge model k draws its sparse points with seed rnd_seed + SEED_OFFSET + k."""


def fit_charge_models(settings, comm, log, timer, seed, structures):
    """Fit the charge models of ``settings.charge_gap`` on ``comm``'s ranks -> (models with alpha,
    {"charge_condition_estimate", "charge_n_rows"}) from this rank's ``structures`` (as read for
    the energy models: the data are not read again). The rows are streamed into a TSQR factor
    (serial with solver = "serial": charge models are small) in blocks of row_block_mb, as the
    energy models' are. Every rank returns the same models."""
    if not settings.charge_gap:
        return [], {}
    counts = comm.allreduce(np.array([sum(len(s.charges.esp) for s in structures if s.charges is not None),
                                      sum(s.charges.total_charge is not None for s in structures
                                          if s.charges is not None)]))
    log(f"charge observations: {counts[0]} ESP values, {counts[1]} total charges")
    def check():  # the same verdict on every rank (counts are summed), raised through collective
        if counts.sum() == 0:
            raise InputError(f"charge_gap is set but no structure has ESP data or a total charge (keys "
                             f"'{settings.esp_points_parameter_name}', '{settings.esp_parameter_name}', "
                             f"'{settings.total_charge_parameter_name}')", file=settings.at_file,
                             key=settings.esp_parameter_name)

    collective(comm, check)
    charged = [s for s in structures if s.charges is not None]
    species = species_order(comm, charged)  # the species of the charge data, in file order
    expanded = expand_models(settings, species, settings.charge_gap)
    with timer.phase("charges: sparse points"):
        models = sparse_models(comm, charged, expanded, seed + SEED_OFFSET, log, name="charge model",
                               print_sparse_index=False)
    M = sum(m.n_sparse for m in models)

    def count(s):
        return s.charges.n_rows

    def build(s, out):
        out[:] = charge_covariance_rows([s], models, settings.at_file)

    with RowFactor.create(comm, M + 1, "serial" if settings.solver == "serial" else "tsqr") as factor:
        with timer.phase("charges: rows"):
            rows_per_block = collective(comm, row_block_rows, comm, settings, charged, M + 1, count)
            fold_rows(comm, factor, charged, build, rows_per_block, count=count)
        n_total = comm.allreduce(sum(count(s) for s in charged))
        log(f"charge K_NM: {n_total} rows x {M} sparse points")
        with timer.phase("charges: solve"):
            solution = solve_weights(comm, factor, models, settings.sparse_jitter)
    log(f"charge model solved: condition estimate {solution.condition:.3e}, residual {solution.residual:.4e}")
    return models, {"charge_condition_estimate": solution.condition, "charge_n_rows": int(n_total)}


def fit_charges_only(settings, comm, log, timer, seed):
    """A fit with charge models and no energy model -> Potential (no energy models, e0 zero for
    every species, so that unknown species are still reported at prediction)."""
    with timer.phase("read"):
        structures, _ = load_structures(comm, settings, log, check_sigma=False)
        data_hash = file_data_hash(comm, settings.at_file)
        species = species_order(comm, structures)
    charge_models, info = fit_charge_models(settings, comm, log, timer, seed, structures)
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    return Potential([], {z: 0.0 for z in species}, settings_toml, provenance(comm, settings, seed, data_hash, **info),
                     charge_models=charge_models)
