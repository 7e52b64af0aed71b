"""The fit, phase by phase, as a library call: ``fit(settings, comm)`` -> Potential.

read & partition (structures) -> observations -> e0 -> descriptors -> sparse points (models) ->
covariance rows (rows) -> solve (weights) -> provenance (output); the charge models, a GP of their
own, are fitted after (charges). Every rank runs every phase; errors found on one rank are raised
on all ranks through :func:`pargap.parallel.collective`, so no rank waits in a collective alone.
"""

import dataclasses

import numpy as np

from pargap.baselines.core_potential import load_core
from pargap.data.frames import scan_frames
from pargap.errors import InputError
from pargap.fitting.charges import fit_charge_models, fit_charges_only
from pargap.fitting.checkpoint import Stopped
from pargap.fitting.e0 import compute_e0
from pargap.fitting.models import descriptor_pools, draw_seed, drop_empty, select_models
from pargap.fitting.output import file_hash, provenance, variance_factor
from pargap.fitting.rows import empty_rows, fill_rows
from pargap.fitting.species import expand_models, species_order
from pargap.fitting.structures import load_structures
from pargap.fitting.weights import solve_weights
from pargap.linalg.solve import choose_solver
from pargap.parallel import SerialComm, collective, on_root
from pargap.potential.potential import Potential
from pargap.progress import Log, PhaseTimer


def build_models(settings, comm, log, timer, seed, stop=None, core=None):
    """Phases read, descriptors and sparse points: (this rank's structures, models, e0, data
    hash, number of structures in the file). A stop request before the models exist ends the fit
    with nothing to save."""
    def check(phase):
        if stop is not None and stop.agreed():
            raise Stopped(f"stopped (SIGTERM or --stop-after) after the {phase} phase, before any rows: "
                          "nothing to checkpoint")

    with timer.phase("read"):
        index = on_root(comm, scan_frames, settings.at_file)
        structures, part = load_structures(comm, settings, log, index=index)
        data_hash = on_root(comm, file_hash, settings.at_file)  # of the data as read
        species = species_order(comm, structures)
        e0 = collective(comm, compute_e0, comm, settings, structures, species, core)
        counts = comm.allreduce(np.array([
            sum(s.energy is not None for s in structures),
            sum(3 * s.n_atoms for s in structures if s.forces is not None),
            sum(6 for s in structures if s.virial is not None),
            sum(len(s.hessian) for s in structures),
        ]))
    from ase.data import chemical_symbols

    log("species " + " ".join(chemical_symbols[z] for z in species) + "; e0 "
        + " ".join(f"{chemical_symbols[z]}={v:.6f}" for z, v in e0.items()) + " eV")
    log(f"observations: {counts[0]} energies, {counts[1]} force components, {counts[2]} virial components, "
        f"{counts[3]} Hessian eigenvalues")
    check("read")

    expanded = expand_models(settings, species)
    with timer.phase("descriptors"):
        expanded, pools = drop_empty(comm, expanded, descriptor_pools(structures, expanded), log)
    check("descriptors")

    with timer.phase("sparse points"):
        models = select_models(comm, expanded, pools, seed, log)
        del pools
    return structures, models, e0, data_hash, len(index)


def build_rows(settings, comm, log, timer, seed, core=None):
    """Phases read, descriptors, sparse points and covariance rows, without checkpoints or stop
    requests: (models, e0, this rank's rows block (n_p, M+1), data hash). core: the baseline
    potential subtracted from the targets, or None."""
    structures, models, e0, data_hash, _ = build_models(settings, comm, log, timer, seed, core=core)
    block = empty_rows(structures, models)
    fill_rows(settings, comm, log, timer, structures, models, e0, block, core=core)
    return models, e0, block, data_hash


def fit(settings, comm=None, log=None, timer=None, checkpoint=None, restart=None, stop=None):
    """Fit the sparse GP(s) described by ``settings`` (FitSettings) on ``comm``'s ranks.

    checkpoint: a folder where the rows and the models are saved before the solve; restart: a
    folder with such a checkpoint (complete, or partial after a stop), made with the same
    settings, to go on from (any number of ranks). stop: a :class:`pargap.fitting.checkpoint.StopSignal`;
    once it fires, what is done is saved (to checkpoint, else restart, else
    ``<gp_file>.checkpoint``) and :class:`pargap.fitting.checkpoint.Stopped` is raised on every rank.
    Returns the Potential on every rank; writing it is
    :func:`pargap.fitting.output.write_potential`'s job."""
    from pargap.fitting import checkpoint as saved

    comm = comm or SerialComm()
    log = log or Log(comm)
    timer = timer or PhaseTimer(comm, log)
    core = collective(comm, load_core, settings)
    if core is not None:
        log(f"baseline potential: {settings.core_ip_args} from {settings.core_param_file} "
            f"(cutoff {core.cutoff:.3f} A), subtracted from the targets")
    structures, done, complete = [], [], False
    if restart:
        with timer.phase("restart"):
            models, e0, seed, covered, n_structures, n_saved = saved.load_state(comm, restart, settings)
            data_hash = on_root(comm, file_hash, settings.at_file)
            made_from = on_root(comm, saved.saved_data_hash, restart)

            def same_data():  # the same verdict on every rank, raised as one error
                if made_from and made_from != data_hash:  # the rows would belong to other structures
                    raise InputError(f"the training data changed since the checkpoint in {restart} was written "
                                     "(SHA-256 differs): restart with the same file, or fit afresh",
                                     file=settings.at_file)

            collective(comm, same_data)
            complete = len(covered) >= n_structures
            done = [int(i) for i in covered]
        if not complete:
            with timer.phase("read"):
                structures, _ = load_structures(comm, settings, log, skip=covered)
        block = saved.load_rows(comm, restart, extra=sum(s.n_rows for s in structures))
        log(f"restarted from {restart}: {sum(m.n_sparse for m in models)} sparse points, {n_saved} rows of "
            f"{len(covered)} of {n_structures} structures saved")
    else:
        seed = draw_seed(comm, settings.rnd_seed)
        if not settings.gap:  # charge models only: no energy model, no energies needed
            return fit_charges_only(settings, comm, log, timer, seed)
        structures, models, e0, data_hash, n_structures = build_models(settings, comm, log, timer, seed, stop, core)
        block = empty_rows(structures, models)
    # the settings as run: a drawn seed is recorded, so the file's settings reproduce the fit
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    start = block.shape[0] - sum(s.n_rows for s in structures)
    row, new, stopped = fill_rows(settings, comm, log, timer, structures, models, e0, block, start, stop, core) \
        if not complete else (block.shape[0], [], False)
    done = done + [i for part in comm.allgather(new) for i in part]
    if stopped or (stop is not None and stop.agreed()):  # a stop request before the solve
        folder = checkpoint or restart or f"{settings.gp_file}.checkpoint"
        with timer.phase("checkpoint"):
            saved.save(comm, folder, models, e0, settings_toml, seed, block[:row], done, n_structures, data_hash)
        raise saved.Stopped(f"stopped (SIGTERM or --stop-after): checkpoint of {len(done)} of {n_structures} "
                            f"structures written to {folder}; resume with --restart {folder}", folder)
    n_total = comm.allreduce(block.shape[0])
    M = block.shape[1] - 1
    log(f"K_NM: {n_total} rows x {M} sparse points; this rank {block.nbytes / 2**20:.1f} MB")
    if checkpoint and not (restart and complete):
        with timer.phase("checkpoint"):
            saved.save(comm, checkpoint, models, e0, settings_toml, seed, block, done, n_structures, data_hash)
        log(f"checkpoint written to {checkpoint}")

    with timer.phase("solve"):
        solver, reason = choose_solver(comm, M, settings.solver)
        log(f"solver {solver}: {reason}")
        solution = solve_weights(comm, block, models, settings.sparse_jitter, solver)
        del block
        log(f"solved by {solver}: condition estimate {solution.condition:.3e}, "
            f"residual {solution.residual:.4e}")
    charge_models, charge_info = fit_charge_models(settings, comm, log, timer, seed)  # a GP of its own
    facts = provenance(comm, settings, seed, data_hash, condition_estimate=solution.condition,
                       n_rows=int(n_total), solver=solver, **charge_info)
    return Potential(models, e0, settings_toml, facts, core=core, charge_models=charge_models,
                     factor=variance_factor(settings, solution, solver, log), sparse_jitter=settings.sparse_jitter)
