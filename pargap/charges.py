"""Environment-dependent atomic charges: a sparse GP fitted to the electrostatic potential (ESP).

The local quantity of a charge model is the charge of an atom, q_a = sum_{i centred on a} q(x_i),
with q(x) = sum_m alpha_m w(x) k(x, s_m) w_m the same sparse GP as an energy model (its ``delta``
is a charge scale, e). Its observations are linear functionals of the charges (DESIGN.md section 2):

    ESP at point r_k      Phi(r_k) = C sum_a q_a / |r_k - r_a|   -> row  C sum_a Q_am / |r_k - r_a|
    total charge          Q        = sum_a q_a                   -> row  sum_a Q_am

where Q_am = sum_{i centred on a} w_i k(x_i, s_m) w_m are the per-atom ("local") rows of
:mod:`pargap.observations` and C = COULOMB = e / (4 pi eps0 Angstrom) = 14.399645 V, so that
positions and points are in Angstrom, charges in e and the ESP in volts. Each row is divided by
its noise (``esp_sigma`` in V, ``total_charge_sigma`` in e; a small total-charge sigma makes the
total charge a soft constraint). Charge models are a GP of their own (own sparse points, own
K_MM prior and alpha), solved by the same distributed QR as the energy models.

Data convention (extended XYZ, keys configurable in the settings): info ``esp_points``
(3K floats, Angstrom, x1 y1 z1 x2 ...; a (K, 3) array is accepted too), ``esp_values`` (K, volts)
and ``total_charge`` (e). A structure with a total charge but no ESP contributes just that row.
ESP observations need a non-periodic structure (the 1/r sum is not defined for a periodic one).

The row code is serial numpy over one rank's structures; :func:`fit_charge_models` is the thin
MPI driver called from :mod:`pargap.fit`.
"""

from dataclasses import dataclass

import numpy as np

from pargap.errors import InputError, PargapError

COULOMB = 14.399645
"""e / (4 pi eps0 Angstrom) in volts: the ESP (V) of one elementary charge at 1 Angstrom."""

MIN_DISTANCE = 0.1
"""ESP points closer than this to an atom (Angstrom) are errors: 1/r would dominate the fit."""


@dataclass
class ChargeObservations:
    """The charge-model observations of one structure.

    points (K, 3) Angstrom and esp (K,) V (K may be 0); total_charge e or None; sigma_esp (V) and
    sigma_total_charge (e) their noise."""

    points: np.ndarray
    esp: np.ndarray
    total_charge: float | None
    sigma_esp: float
    sigma_total_charge: float

    @property
    def n_rows(self):
        return len(self.esp) + (self.total_charge is not None)


def charge_observations(atoms, index, settings, file):
    """Read and validate the ESP and total charge of one structure (ase.Atoms) -> ChargeObservations,
    or None when it has neither. Errors name the file, the structure and the key."""
    from pargap.data import _array, lookup

    pkey, vkey = settings.esp_points_parameter_name, settings.esp_parameter_name
    qkey = settings.total_charge_parameter_name
    points, values, total = lookup(atoms, pkey), lookup(atoms, vkey), lookup(atoms, qkey)
    if points is None and values is None and total is None:
        return None
    if (points is None) != (values is None):
        missing, present = (vkey, pkey) if values is None else (pkey, vkey)
        raise InputError(f"ESP data incomplete: '{present}' is given but '{missing}' is missing",
                         file=file, structure=index, key=missing)
    if points is None:
        points, values = np.zeros((0, 3)), np.zeros(0)
    else:
        points = _array(points, lambda a: a.size % 3 == 0 and a.size > 0, "ESP points (3K numbers)",
                        file, index, pkey).reshape(-1, 3)
        K = len(points)
        values = _array(values, lambda a: a.size == K, f"ESP values (expected {K}, one per point)",
                        file, index, vkey).reshape(K)
        if atoms.pbc.any():
            raise InputError("ESP data given for a periodic structure (the 1/r sum needs a molecule: "
                             "set pbc to F)", file=file, structure=index, key=pkey)
        closest = np.min(np.linalg.norm(points[:, None, :] - atoms.positions[None, :, :], axis=-1))
        if closest < MIN_DISTANCE:
            raise InputError(f"an ESP point lies {closest:.3g} Angstrom from an atom (minimum {MIN_DISTANCE})",
                             file=file, structure=index, key=pkey)
    if total is not None:
        total = float(_array(total, lambda a: a.size == 1, "total charge", file, index, qkey).ravel()[0])
    suffix = "_" + settings.sigma_parameter_name
    sigmas = []
    for key, default in (("esp" + suffix, settings.esp_sigma), ("total_charge" + suffix, settings.total_charge_sigma)):
        value = lookup(atoms, key)
        if value is not None:
            value = float(_array(value, lambda a: a.size == 1, key, file, index, key).ravel()[0])
            if not value > 0:
                raise InputError(f"{key} must be positive, got {value}", file=file, structure=index, key=key)
        sigmas.append(default if value is None else value)
    return ChargeObservations(points, values, total, *sigmas)


# ---- rows ------------------------------------------------------------------------------------

def coulomb_matrix(points, positions):
    """C / |r_k - r_a|, (K, n) in V/e, for points (K, 3) and atom positions (n, 3) in Angstrom."""
    d = np.linalg.norm(np.asarray(points)[:, None, :] - np.asarray(positions)[None, :, :], axis=-1)
    return COULOMB / d


def electrostatic_potential(points, positions, charges):
    """Phi(r_k) = C sum_a q_a / |r_k - r_a|, (K,) in V, of point charges q (n,) e."""
    return coulomb_matrix(points, positions) @ np.asarray(charges, dtype=float)


def charge_rows(atoms, models):
    """Per-atom charge rows Q (n_atoms, M_total): q = Q @ alpha, columns in model order."""
    from pargap.observations import model_rows

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


def expand_charge_models(settings, species):
    """(descriptor, kernel, settings, index) of every charge model after gap_fit's species expansion."""
    from pargap.fit import expand_models

    return expand_models(settings, species, settings.charge_gap)


def fit_charge_models(settings, comm, log, timer, seed, structures=None):
    """Fit the charge models of ``settings.charge_gap`` on ``comm``'s ranks -> (models with alpha,
    {"charge_condition_estimate", "charge_n_rows"}). ``structures``: this rank's structures if
    already read (else they are read and partitioned here). Every rank returns the same models."""
    import scipy.linalg

    from pargap.fit import descriptor_pools, load_structures, species_order
    from pargap.model import Model
    from pargap.parallel import collective, on_root
    from pargap.solve import cholesky_factor, serial_solve_block, tsqr_solve_block
    from pargap.sparsify import select_sparse

    if not settings.charge_gap:
        return [], {}
    if structures is None:
        with timer.phase("charges: read"):
            structures, _ = load_structures(comm, settings, log, check_sigma=False)
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
    expanded = expand_charge_models(settings, species)
    with timer.phase("charges: sparse points"):
        pools = descriptor_pools(charged, expanded)
        models = []
        for k, ((descriptor, kernel, g, gap_index), pool) in enumerate(zip(expanded, pools)):
            where = f"charge model {k} ({descriptor.name} " + " ".join(
                f"{key}={value}" for key, value in descriptor.params().items() if key.startswith(("Z", "species"))) + ")"
            x, w, _ = collective(comm, select_sparse, comm, pool, method=g.sparse_method, n_sparse=g.n_sparse,
                                 seed=seed + SEED_OFFSET + k, sparse_file=g.sparse_file, where=where)
            models.append(Model(descriptor, kernel, x, w, gap_index=gap_index))
            log(f"{where}: {len(x)} sparse points by {g.sparse_method}")
    with timer.phase("charges: rows"):
        block = collective(comm, charge_covariance_rows, charged, models, settings.at_file)
    n_total = comm.allreduce(block.shape[0])
    log(f"charge K_NM: {n_total} rows x {block.shape[1] - 1} sparse points")
    with timer.phase("charges: solve"):
        U = collective(comm, lambda: cholesky_factor(scipy.linalg.block_diag(
            *[m.covariance_sparse(settings.sparse_jitter) for m in models])) if comm.Get_rank() == 0 else None)
        if settings.solver == "serial":
            blocks = comm.gather(block, root=0)
            solution = on_root(comm, lambda: serial_solve_block(np.vstack(blocks), U))
        else:
            solution = tsqr_solve_block(comm, block, U)
    log(f"charge model solved: condition estimate {solution.condition:.3e}, residual {solution.residual:.4e}")
    start = 0
    for m in models:
        m.alpha = solution.alpha[start:start + m.n_sparse]
        start += m.n_sparse
    return models, {"charge_condition_estimate": solution.condition, "charge_n_rows": int(n_total)}


def fit_charges_only(settings, comm, log, timer, seed):
    """A fit with charge models and no energy model -> Potential (no energy models, e0 zero for
    every species, so that unknown species are still reported at prediction)."""
    import dataclasses
    import datetime
    import os
    import platform
    import socket

    from pargap import __version__
    from pargap.fit import file_hash, load_structures, species_order
    from pargap.parallel import on_root
    from pargap.potential import Potential

    with timer.phase("read"):
        structures, _ = load_structures(comm, settings, log, check_sigma=False)
        data_hash = on_root(comm, file_hash, settings.at_file)
        species = species_order(comm, structures)
    charge_models, info = fit_charge_models(settings, comm, log, timer, seed, structures)
    provenance = {
        "pargap_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "ranks": comm.Get_size(),
        "at_file": os.path.abspath(settings.at_file),
        "at_file_sha256": data_hash,
        "rnd_seed": seed,
    } | info
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    return Potential([], {z: 0.0 for z in species}, settings_toml, provenance, charge_models=charge_models)
