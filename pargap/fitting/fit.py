"""The fit, phase by phase, as a library call: ``fit(settings, comm)`` -> Potential.

read & partition (structures) -> observations -> e0 -> descriptors -> sparse points (models) ->
the charge models, a GP of their own (charges) -> covariance rows, streamed into the factor
(rows) -> solve (weights) -> provenance (output). Every rank runs every phase; errors found on
one rank are raised on all ranks through :func:`pargap.parallel.collective`, so no rank waits in
a collective alone.
"""

import dataclasses

import numpy as np

from pargap.baselines.core_potential import load_core
from pargap.data.local_property import property_offsets
from pargap.errors import ConfigError, InputError
from pargap.fitting.charges import fit_charge_models, fit_charges_only
from pargap.fitting.checkpoint import Stopped
from pargap.fitting.e0 import compute_e0
from pargap.fitting.linear_system import dump_linear_system
from pargap.fitting.models import draw_seed, sparse_models
from pargap.fitting.output import provenance, stores_variance, variance_factor
from pargap.fitting.rows import covariance_rows, fold_rows, row_block_rows, structure_rows
from pargap.fitting.scan import data_hash as file_data_hash, index_frames
from pargap.fitting.species import expand_models, species_order
from pargap.fitting.structures import load_structures
from pargap.fitting.weights import solve_weights
from pargap.linalg.factor import RowFactor
from pargap.linalg.solve import choose_solver
from pargap.parallel import SerialComm, collective, on_root
from pargap.potential.potential import Potential
from pargap.progress import Log, PhaseTimer


def build_models(settings, comm, log, timer, seed, stop=None, core=None):
    """Phases read, then descriptors and sparse points (model by model): (this rank's structures,
    models, e0, data hash, number of structures in the file). A stop request after the read ends
    the fit with nothing to save; one during the sparse points is acted on at the first round of
    rows, where the models are saved."""
    def check(phase):
        if stop is not None and stop.agreed():
            raise Stopped(f"stopped (SIGTERM or --stop-after) after the {phase} phase, before any rows: "
                          "nothing to checkpoint")

    with timer.phase("read"):
        index = index_frames(comm, settings.at_file)
        structures, part = load_structures(comm, settings, log, index=index)
        data_hash = file_data_hash(comm, settings.at_file)  # of the data as read
        species = species_order(comm, structures)
        e0 = collective(comm, compute_e0, comm, settings, structures, species, core, log)
        counts = comm.allreduce(np.array([
            sum(s.energy is not None for s in structures),
            sum(int(np.isfinite(s.sigma_forces).sum()) for s in structures if s.forces is not None),  # unmasked
            sum(6 for s in structures if s.virial is not None),
            sum(len(s.hessian) for s in structures),
            sum(s.local_property.n_rows for s in structures if s.local_property is not None),
        ]))
    from ase.data import chemical_symbols

    log("species " + " ".join(chemical_symbols[z] for z in species) + "; e0 "
        + " ".join(f"{chemical_symbols[z]}={v:.6f}" for z, v in e0.items()) + " eV")
    log(f"observations: {counts[0]} energies, {counts[1]} force components, {counts[2]} virial components, "
        f"{counts[3]} Hessian eigenvalues" + (f", {counts[4]} local properties" if counts[4] else ""))
    check("read")

    expanded = collective(comm, expand_models, settings, species)  # reads theta files: one verdict
    with timer.phase("descriptors and sparse points"):
        models = sparse_models(comm, structures, expanded, seed, log, known_types=settings.config_type_sigma,
                               actual_gpcov=settings.sparse_use_actual_gpcov)
    # a stop request from here on is acted on at the first round of rows: the models are saved
    return structures, models, e0, data_hash, len(index)


def build_rows(settings, comm, log, timer, seed, core=None):
    """Phases read, descriptors, sparse points and covariance rows, without checkpoints or stop
    requests, all rows held (for the likelihood's hyperparameter search): (models, e0, this
    rank's rows block (n_p, M+1), data hash). core: the baseline potential subtracted from the
    targets, or None."""
    structures, models, e0, data_hash, _ = build_models(settings, comm, log, timer, seed, core=core)
    with timer.phase("covariance rows"):
        block = collective(comm, covariance_rows, structures, models, e0, settings.at_file, settings.hessian_delta,
                           core, local_property0=settings.local_property0)
    return models, e0, block, data_hash


def fit(settings, comm=None, log=None, timer=None, checkpoint=None, restart=None, stop=None):
    """Fit the sparse GP(s) described by ``settings`` (FitSettings) on ``comm``'s ranks.

    The energy models' rows are streamed (:mod:`pargap.fitting.rows`): each rank builds them a
    block of at most row_block_mb at a time and folds the block into the factor, so no rank holds
    its rows. checkpoint: a folder where the factor and the models are saved before the solve;
    restart: a folder with such a checkpoint (complete, or partial after a stop), made with the
    same settings, to go on from (any number of ranks). stop: a
    :class:`pargap.fitting.checkpoint.StopSignal`; once it fires (while rows are built or during
    the solve), the factor of what is done is saved (to checkpoint, else restart, else
    ``<gp_file>.checkpoint``) and :class:`pargap.fitting.checkpoint.Stopped` is raised on every
    rank. Returns the Potential on every rank; writing it is
    :func:`pargap.fitting.output.write_potential`'s job."""
    from pargap.fitting import checkpoint as saved

    comm = comm or SerialComm()
    log = log or Log(comm)
    timer = timer or PhaseTimer(comm, log)
    if settings.sparsify_only_no_fit:
        raise ConfigError("sparsify_only_no_fit is set: choose the sparse points with "
                          "pargap.fitting.sparsify_only.sparsify_only, or unset it to fit")
    folder = checkpoint or restart or f"{settings.gp_file}.checkpoint"
    if settings.gap and (checkpoint or restart or stop is not None):
        saved.check_folder(comm, folder)  # before any work, not at the first write
    core = collective(comm, load_core, settings)
    if core is not None:
        log(f"baseline potential: {settings.core_ip_args} from {settings.core_param_file} "
            f"(cutoff {core.cutoff:.3f} A), subtracted from the targets")
    structures = []
    if restart:
        with timer.phase("restart"):
            models, e0, seed, covered, n_structures, charge_models, info = saved.load_state(comm, restart, settings)
            data_hash = file_data_hash(comm, settings.at_file)
            made_from = on_root(comm, saved.saved_data_hash, restart)

            def same_data():  # the same verdict on every rank, raised as one error
                if made_from and made_from != data_hash:  # the factor would be of other structures
                    raise InputError(f"the training data changed since the checkpoint in {restart} was written "
                                     "(SHA-256 differs): restart with the same file, or fit afresh",
                                     file=settings.at_file)

            collective(comm, same_data)
            was_local = on_root(comm, saved.saved_local_property, restart)
            charge_info = {k: v for k, v in info.items() if k.startswith("charge_")}
            n_saved = int(info.get("n_rows", 0))
        if len(covered) < n_structures:
            with timer.phase("read"):
                structures, _ = load_structures(comm, settings, log, skip=covered)
        M = sum(m.n_sparse for m in models)
        solver = _solver(comm, M, settings.solver, log)
        factor = collective(comm, saved.restore_factor, comm, restart, M + 1, solver)
        log(f"restarted from {restart}: {M} sparse points, the factor of {n_saved} rows of {len(covered)} of "
            f"{n_structures} structures")
    else:
        seed = draw_seed(comm, settings.rnd_seed)
        if not settings.gap:  # charge models only: no energy model, no energies needed
            return fit_charges_only(settings, comm, log, timer, seed)
        structures, models, e0, data_hash, n_structures = build_models(settings, comm, log, timer, seed, stop, core)
        # the charge GP from the structures in memory, before the energy rows: every checkpoint holds it
        charge_models, charge_info = fit_charge_models(settings, comm, log, timer, seed, structures)
        covered, n_saved, was_local = [], 0, None
        M = sum(m.n_sparse for m in models)
        solver = _solver(comm, M, settings.solver, log)
        factor = RowFactor.create(comm, M + 1, solver)
    local_property = was_local or (settings.local_property_parameter_name if comm.allreduce(
        sum(s.local_property is not None for s in structures)) else None)  # a fit of per-atom properties
    # the settings as run: a drawn seed is recorded, so the file's settings reproduce the fit
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    n_new = comm.allreduce(sum(s.n_rows for s in structures))
    n_total = n_saved + n_new

    def save(done, n_rows):
        with timer.phase("checkpoint"):
            saved.save(comm, folder, models, e0, settings_toml, seed, factor.checkpoint_state(), done, n_structures,
                       n_rows, data_hash, charge_models, charge_info, local_property)

    def stopped(done, n_rows, when):
        save(done, n_rows)
        n_done = comm.bcast(len(done) if comm.Get_rank() == 0 else None, root=0)
        raise saved.Stopped(f"stopped (SIGTERM or --stop-after) {when}: checkpoint of {n_done} of "
                            f"{n_structures} structures written to {folder}; resume with --restart {folder}", folder)

    with factor:  # closed (ScaLAPACK's BLACS grids freed) on every path out
        with timer.phase("covariance rows"):
            rows_per_block = collective(comm, row_block_rows, comm, settings, structures, M + 1)
            log(f"K_NM: {n_total} rows x {M} sparse points, built and folded into the {solver} factor in blocks "
                f"of at most {rows_per_block} rows ({rows_per_block * (M + 1) * 8 / 2**20:.1f} MB) per rank")

            def build(s, out):
                structure_rows(s, models, e0, out, settings.at_file, settings.hessian_delta, core,
                               settings.local_property0)

            new, interrupted, building, folding = fold_rows(comm, factor, structures, build, rows_per_block, stop,
                                                          log=log)
            finished = set(new)
            n_done = n_saved + comm.allreduce(sum(s.n_rows for s in structures if s.index in finished))
            done = _merged_indices(comm, covered, new)
        if interrupted or (stop is not None and stop.agreed()):  # a stop request before the solve
            stopped(done, n_done, "while building rows" if n_done < n_total else "before the solve")
        busy = comm.allgather(building)
        log(f"row building per rank (CPU): slowest {max(busy):.3f} s, mean {np.mean(busy):.3f} s, imbalance "
            f"{100 * (max(busy) / max(np.mean(busy), 1e-12) - 1):.1f}%; folding: slowest "
            f"{max(comm.allgather(folding)):.3f} s")
        if settings.linear_system_dump_file:
            with timer.phase("dump"):
                dump_linear_system(comm, settings.linear_system_dump_file, structures, models, e0, settings, core)
            log(f"linear system written to {settings.linear_system_dump_file}")
        complete = restart if restart and not n_new else None  # a checkpoint already holding every row
        if checkpoint and not complete:
            save(done, n_done)
            complete = checkpoint
            log(f"checkpoint written to {checkpoint}")

        with timer.phase("solve"):
            if stop is not None:
                stop.entering("solve")
            solution = solve_weights(comm, factor, models, settings.sparse_jitter, stores_variance(settings, M))
            log(f"solved by {solver}: condition estimate {solution.condition:.3e}, "
                f"residual {solution.residual:.4e}")
        if stop is not None and stop.agreed():  # a stop request during the solve
            if not complete:
                stopped(done, n_done, "during the solve")
            raise saved.Stopped(f"stopped (SIGTERM or --stop-after) during the solve: the checkpoint in {complete} "
                                f"holds every structure; resume with --restart {complete}", complete)
    facts = provenance(comm, settings, seed, data_hash, condition_estimate=solution.condition,
                       n_rows=int(n_total), solver=solver,
                       row_block_mb=rows_per_block * (M + 1) * 8 / 2**20, **charge_info)  # the plan's input
    if local_property is not None:  # its e0 is e0 + local_property0, as gap_fit's XML
        e0 = {z: v + float(property_offsets([z], settings.local_property0)[0]) for z, v in e0.items()}
    return Potential(models, e0, settings_toml, facts, core=core, charge_models=charge_models,
                     factor=variance_factor(settings, solution, solver, log), sparse_jitter=settings.sparse_jitter,
                     local_property=local_property)


def _solver(comm, M, requested, log):
    solver, reason = choose_solver(comm, M, requested)
    log(f"solver {solver}: {reason}")
    return solver


def _merged_indices(comm, covered, new):
    """The file indices of the structures folded in: ``covered`` (saved) and every rank's ``new``,
    sorted, on rank 0 (None on the others)."""
    parts = comm.gather(list(new), root=0)
    if comm.Get_rank() != 0:
        return None
    return sorted(int(i) for i in list(covered) + [i for part in parts for i in part])
