"""The fit, phase by phase, as a library call: ``fit(settings, comm)`` -> Potential.

read & partition -> observations -> e0 -> descriptors -> sparse points -> covariance rows ->
solve -> write. Every rank runs every phase; errors found on one rank are raised on all ranks
through :func:`pargap.parallel.collective`, so no rank waits in a collective alone.
"""

import dataclasses
import datetime
import hashlib
import os
import platform
import socket
import time

import numpy as np

from pargap import __version__
from pargap.fitting.charges import fit_charge_models, fit_charges_only
from pargap.baselines.core_potential import core_targets, load_core
from pargap.fitting.checkpoint import Stopped
from pargap.data.frames import extract, is_isolated_atom, read_frames, scan_frames
from pargap.descriptors import make_descriptor
from pargap.errors import ConfigError, InputError, PargapError
from pargap.gp.kernels import make_kernel
from pargap.gp.model import Model
from pargap.gp.observations import VIRIAL_COMPONENTS, hessian_row, model_rows
from pargap.parallel import SerialComm, collective, collective_flag, gather_sorted, on_root, partition_structures
from pargap.potential.potential import Potential
from pargap.progress import Log, PhaseTimer
from pargap.linalg.solve import (choose_solver, cholesky_factor, covariance_sparse_tile, scalapack_solve,
                          serial_solve_block, solve_on_root, tsqr_solve_block)
from pargap.fitting.sparsify import DescriptorPool, select_sparse


STRUCTURE_OVERHEAD = 30
"""Fixed cost of a structure's rows (Python calls, neighbour-list set-up) in neighbour-pair units:
measured about 0.45 ms against 15 us per pair + atom (2b + SOAP n_max 8, l_max 6, 230 points)."""


def structure_cost(atoms, cutoff):
    """Row-building cost of a structure: its neighbour pairs within the cutoff plus its atoms
    (descriptor gradients grow with the pairs, force rows with the atoms) plus a fixed
    STRUCTURE_OVERHEAD (which dominates for small clusters)."""
    from pargap.descriptors.neighbours import neighbour_list

    return len(neighbour_list(atoms, cutoff)[0]) + len(atoms) + STRUCTURE_OVERHEAD


def load_structures(comm, settings, log, check_sigma=True, skip=(), index=None):
    """Index the file on rank 0, partition, read and validate this rank's structures.

    A first partition by atom counts lets every rank read its share and count neighbour pairs;
    with more than one rank, the structures are then re-partitioned by that cost and each rank
    reads the ones it gained (reading is cheap beside the rows). Structures in ``skip`` (file
    indices, e.g. already in a checkpoint) are left out; ``index`` is the file's FrameIndex if
    already made."""
    path = settings.at_file
    index = index or on_root(comm, scan_frames, path)
    rank, size = comm.Get_rank(), comm.Get_size()
    skip = {int(i) for i in skip}
    todo = [i for i in range(len(index)) if i not in skip]  # partition positions -> file indices
    n_atoms = [index.n_atoms[i] for i in todo]
    part = partition_structures(n_atoms, rank, size)

    def read(which):
        atoms = read_frames(index, which)
        return {i: extract(a, i, settings, path, check_sigma) for a, i in zip(atoms, which)}

    mine = collective(comm, read, [todo[j] for j in part.structures])
    if size > 1:
        position = {i: j for j, i in enumerate(todo)}
        costs = np.zeros(len(todo))
        for part_costs in comm.allgather({i: structure_cost(s.atoms, settings.cutoff) for i, s in mine.items()}):
            for i, c in part_costs.items():
                costs[position[i]] = c
        part = partition_structures(n_atoms, rank, size, costs)
        gained = [todo[j] for j in part.structures if todo[j] not in mine]
        mine.update(collective(comm, read, gained))
    left = f" ({len(skip)} already in the checkpoint)" if skip else ""
    log(f"{len(todo)} structures{left}, {sum(n_atoms)} atoms in {path}; {part.size} rank(s), "
        f"cost imbalance {100 * part.imbalance:.1f}%")
    return [mine[todo[j]] for j in part.structures], part


def species_order(comm, structures):
    """Species in order of first appearance in the file (gap_fit's order), the same on all ranks."""
    firsts = {}
    for s in structures:
        for a, z in enumerate(s.atoms.numbers.tolist()):
            firsts.setdefault(z, (s.index, a))
    merged = {}
    for part in comm.allgather(firsts):
        for z, where in part.items():
            merged[z] = min(merged.get(z, where), where)
    return [z for z, _ in sorted(merged.items(), key=lambda t: t[1])]


def compute_e0(comm, settings, structures, species, core=None, log=None):
    """{Z: e0 in eV} by explicit values, isolated atoms, the average energy per atom or a least-squares
    fit on the species counts (:func:`fitted_e0`), plus e0_offset. Energies are taken minus the
    baseline (core) potential's, as gap_fit does. log: where the fit's residuals and the warning
    for average e0 on data of varied composition go."""
    def energy(s):
        return s.energy - (core.calculate(s.atoms, gradients=False)["energy"] if core else 0.0)

    from ase.data import atomic_numbers, chemical_symbols

    e0 = settings.e0
    if isinstance(e0, dict):
        values = {}
        for sym, v in e0.items():
            if sym not in atomic_numbers:
                raise ConfigError(f"e0: unknown element symbol '{sym}'")
            values[atomic_numbers[sym]] = v
        missing = [z for z in species if z not in values]
        if missing:
            first = _first_structure_with(comm, structures, missing)
            raise InputError(
                f"species {[chemical_symbols[z] for z in missing]} have no e0 value (give them in e0)",
                file=settings.at_file, structure=first, key="e0",
            )
    elif e0 is not None:
        values = {z: float(e0) for z in species}
    elif settings.e0_method == "isolated":
        found = gather_sorted(comm, [
            (s.index, int(s.atoms.numbers[0]), energy(s)) for s in structures
            if s.energy is not None and is_isolated_atom(s.atoms, settings.cutoff)
        ])
        values = {}
        for index, z, energy in found:
            if z in values:
                raise InputError(
                    f"a second isolated atom of {chemical_symbols[z]} (e0_method=isolated needs exactly one)",
                    file=settings.at_file, structure=index,
                )
            values[z] = energy
        missing = [z for z in species if z not in values]
        if missing:
            first = _first_structure_with(comm, structures, missing)
            raise InputError(
                f"no isolated-atom structure (one atom, energy, no neighbour within the cutoff) for "
                f"{[chemical_symbols[z] for z in missing]}: add one, or set e0 or e0_method=average",
                file=settings.at_file, structure=first, key="e0",
            )
    else:
        per = gather_sorted(comm, [(s.index, energy(s), [int(np.sum(s.atoms.numbers == z)) for z in species])
                                   for s in structures if s.energy is not None])
        if not per:
            raise InputError(f"e0_method={settings.e0_method} needs energies, and no structure has one",
                             file=settings.at_file)
        energies = np.array([e for _, e, _ in per])
        counts = np.array([c for _, _, c in per], dtype=float)
        if settings.e0_method == "fit":
            fitted, residual, rank = fitted_e0(energies, counts)
            values = dict(zip(species, fitted.tolist()))
            if log:
                log(f"e0 fitted on {len(per)} total energies: residual per atom RMS "
                    f"{np.sqrt(np.mean(residual**2)) * 1000:.3f} meV/atom, max {np.abs(residual).max() * 1000:.3f} meV/atom"
                    + ("" if rank == len(species) else f"; the compositions fix only {rank} combination(s) of "
                       f"the {len(species)} e0 (minimum-norm solution)"))
        else:
            mean = float(np.mean(energies / counts.sum(axis=1)))  # mean over frames of E/N, as gap_fit
            values = {z: mean for z in species}
            if log and composition_varies(counts):
                log("warning: e0_method=average gives every species the same e0 (the mean energy per atom), but "
                    "the composition varies between structures: the GP must then learn the species' energy "
                    "differences; e0_method=fit (least squares on the species counts) is better suited")
    known = list(species) + [z for z in values if z not in species]  # given e0 of absent species too
    return {z: values.get(z, 0.0) + settings.e0_offset for z in known}


def fitted_e0(energies, counts):
    """Per-species e0 by least squares of the total energies on the species counts (e0_method=fit):

        e0 = argmin_e0 sum_s (E_s - sum_z n_sz e0_z)^2

    energies: (S,) eV; counts: (S, Z) atoms of each species in each structure. Returns (e0 (Z,) eV,
    residuals per atom (S,) eV/atom, rank of the counts). Where the compositions do not fix every
    e0 (rank < Z, e.g. one molecule's stoichiometry) the minimum-norm solution is taken: each
    structure's baseline sum_z n_sz e0_z is still the least-squares one."""
    import scipy.linalg

    counts = np.asarray(counts, dtype=float)
    e0, _, rank, _ = scipy.linalg.lstsq(counts, np.asarray(energies, dtype=float))
    return e0, (energies - counts @ e0) / counts.sum(axis=1), int(rank)


def composition_varies(counts):
    """Whether the species fractions n_z / N of the structures (rows of ``counts``) differ."""
    counts = np.asarray(counts, dtype=float)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    return bool(len(fractions) and np.ptp(fractions, axis=0).max() > 1e-9)


def _first_structure_with(comm, structures, zs):
    mine = [s.index for s in structures if set(s.atoms.numbers.tolist()) & set(zs)]
    found = [i for part in comm.allgather(mine[:1]) for i in part]
    return min(found) if found else None


def species_expansion(g, species):
    """gap_fit's add_species: the descriptor settings of each model one gap entry becomes.

    distance_2b: one per species pair (Z1 <= Z2 in species order); angle_3b: one per centre
    species and neighbour pair; soap: one per centre species, with all species as neighbours."""
    S = len(species)
    pairs = [(species[i], species[j]) for i in range(S) for j in range(i, S)]
    if not g.add_species:
        return [{}]
    if g.descriptor == "distance_2b" and g.Z1 == 0 and g.Z2 == 0:
        return [{"Z1": a, "Z2": b} for a, b in pairs]
    if g.descriptor == "angle_3b" and g.Z == 0 and g.Z1 == 0 and g.Z2 == 0:
        return [{"Z": z, "Z1": a, "Z2": b} for z in species for a, b in pairs]
    if g.descriptor == "soap" and g.Z == 0 and g.species_Z is None:
        return [{"Z": z, "n_species": S, "species_Z": list(species)} for z in species]
    return [{}]


def expand_models(settings, species, entries=None):
    """(descriptor, kernel, gap settings, gap index) for every model of ``entries`` (default
    settings.gap; the charge models pass settings.charge_gap), after species expansion."""
    expanded = []
    for k, g in enumerate(settings.gap if entries is None else entries):
        for extra in species_expansion(g, species):
            descriptor = make_descriptor(g.descriptor, **(g.descriptor_params() | extra))
            kernel = make_kernel(g.covariance_type, dimension=descriptor.dimension, **g.kernel_params())
            expanded.append((descriptor, kernel, g, k))
    return expanded


def descriptor_pools(structures, expanded):
    """Descriptor values (no gradients) of this rank's structures, one pool per model."""
    pools = []
    for descriptor, _, _, _ in expanded:
        xs, ws, owners = [], [], []
        for s in structures:
            d = descriptor.compute(s.atoms, gradients=False)
            xs.append(d.x)
            ws.append(d.weight)
            owners.append(np.full(len(d), s.index))
        D = descriptor.dimension
        pools.append(DescriptorPool(
            np.concatenate(xs) if xs else np.zeros((0, D)),
            np.concatenate(ws) if ws else np.zeros(0),
            np.concatenate(owners) if owners else np.zeros(0, dtype=int),
        ))
    return pools


def covariance_rows(structures, models, e0, file=None, hessian_delta=0.01, core=None, out=None):
    """This rank's rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y], (n_p, M+1), Fortran-ordered so that
    the QR factorises it in place (written into ``out``, a view of that shape, if given).

    Targets: E - sum e0 (eV); F (eV/A); the 6 independent virial components W_kl (eV); Hessian
    eigenvalues (eV/A^2) by central differences of force rows with displacement hessian_delta;
    all minus the baseline potential ``core`` (CorePotential or None)."""
    n_rows = sum(s.n_rows for s in structures)
    M = sum(m.n_sparse for m in models)
    block = np.empty((n_rows, M + 1), order="F") if out is None else out
    A, b = block[:, :M], block[:, M]
    row = 0
    for s in structures:
        first = row
        rows = model_rows(s.atoms, models, gradients=s.forces is not None or s.virial is not None)
        energy, forces, virial, hessian = core_targets(core, s, hessian_delta)
        if s.energy is not None:
            baseline = sum(e0[int(z)] for z in s.atoms.numbers)
            A[row] = rows.energy / s.sigma_energy
            b[row] = (energy - baseline) / s.sigma_energy
            row += 1
        if s.forces is not None:
            n = 3 * s.n_atoms
            A[row:row + n] = (rows.forces / s.sigma_forces[:, :, None]).reshape(n, M)
            b[row:row + n] = (forces / s.sigma_forces).ravel()
            row += n
        if s.virial is not None:
            for k, l in VIRIAL_COMPONENTS:
                A[row] = rows.virial[k, l] / s.sigma_virial[k, l]
                b[row] = virial[k, l] / s.sigma_virial[k, l]
                row += 1
        for eigenvalue, eigenvector in hessian:
            A[row] = hessian_row(s.atoms, models, eigenvector, hessian_delta) / s.sigma_hessian
            b[row] = eigenvalue / s.sigma_hessian
            row += 1
        if not np.all(np.isfinite(block[first:row])):
            raise InputError("its covariance rows are not finite (atoms on top of each other?)",
                             file=file, structure=s.index)
    assert row == n_rows
    return block


def append_sparse_index(comm, path, ids):
    """Append 1-based descriptor indices, one per line, as gap_fit's print_sparse_index (rank 0)."""
    if comm.Get_rank() == 0:
        try:
            with open(path, "a") as fh:
                fh.writelines(f"{i + 1}\n" for i in ids)
        except OSError as exc:
            raise PargapError(f"print_sparse_index: cannot write {path}: {exc}") from None


def file_hash(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


ROW_ROUNDS = 16
"""The rows are built in at most this many rounds (groups of structures of about equal rows on
each rank). A rank that got a stop request (SIGTERM) stops after its current structure; the
ranks agree at the end of each round (few rounds: each is a synchronisation point)."""


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
        e0 = collective(comm, compute_e0, comm, settings, structures, species, core, log)
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
        pools = descriptor_pools(structures, expanded)
        counts = comm.allreduce(np.array([len(pool.x) for pool in pools], dtype=np.int64))
    # species expansion (add_species) makes a model for every species combination; one that no
    # structure has (e.g. O-O in ethanol) has no descriptors and contributes nothing: drop it
    unused = [k for k, ((_, _, g, _), n) in enumerate(zip(expanded, counts)) if n == 0 and g.add_species]
    for k in unused:
        descriptor = expanded[k][0]
        log(f"model {k} ({descriptor.name} " + " ".join(
            f"{key}={value}" for key, value in descriptor.params().items() if key.startswith("Z"))
            + "): no descriptors in the data, dropped")
    expanded = [e for k, e in enumerate(expanded) if k not in unused]
    pools = [p for k, p in enumerate(pools) if k not in unused]
    check("descriptors")

    with timer.phase("sparse points"):
        models = []
        for k, ((descriptor, kernel, g, gap_index), pool) in enumerate(zip(expanded, pools)):
            where = f"model {k} ({descriptor.name} " + " ".join(
                f"{key}={value}" for key, value in descriptor.params().items() if key.startswith(("Z", "species"))) + ")"
            x, w, ids = collective(comm, select_sparse, comm, pool, method=g.sparse_method,
                                   n_sparse=g.n_sparse, seed=seed + k, sparse_file=g.sparse_file, where=where)
            models.append(Model(descriptor, kernel, x, w, gap_index=gap_index))
            if g.print_sparse_index:
                collective(comm, append_sparse_index, comm, g.print_sparse_index, ids)
            log(f"{where}: {len(x)} sparse points by {g.sparse_method}")
        del pools
    return structures, models, e0, data_hash, len(index)


def row_groups(structures, n_groups):
    """Consecutive groups of ``structures``, ``n_groups`` of them (some maybe empty), of about
    equal row counts."""
    rows = np.cumsum([s.n_rows for s in structures])
    total = rows[-1] if len(rows) else 0
    cuts = np.searchsorted(rows, total * np.arange(1, n_groups) / n_groups, side="right")
    bounds = [0, *cuts.tolist(), len(structures)]
    return [structures[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def build_rows(settings, comm, log, timer, seed, core=None):
    """Phases read, descriptors, sparse points and covariance rows, without checkpoints or stop
    requests: (models, e0, this rank's rows block (n_p, M+1), data hash). core: the baseline
    potential subtracted from the targets, or None."""
    structures, models, e0, data_hash, _ = build_models(settings, comm, log, timer, seed, core=core)
    block = np.empty((sum(s.n_rows for s in structures), sum(m.n_sparse for m in models) + 1), order="F")
    fill_rows(settings, comm, log, timer, structures, models, e0, block, core=core)
    return models, e0, block, data_hash


def fill_rows(settings, comm, log, timer, structures, models, e0, block, start=0, stop=None, core=None):
    """Phase covariance rows: the rows of ``structures`` into ``block[start:]``, in rounds; after
    each round the ranks check for a stop request. Returns (rows filled, file indices of the
    structures done, stopped)."""
    n_rounds = max(1, min(max(comm.allgather(len(structures))), ROW_ROUNDS))
    row, done, busy, stopped = start, [], 0.0, False
    with timer.phase("covariance rows"):
        for group in row_groups(structures, n_rounds):
            def build():
                begin, n = time.process_time(), 0  # CPU time: fair under oversubscription too
                for s in group:
                    if stop is not None and stop.received:
                        break
                    covariance_rows([s], models, e0, settings.at_file, settings.hessian_delta, core,
                                    out=block[row + n:row + n + s.n_rows])
                    n += s.n_rows
                    done.append(s.index)
                    if stop is not None:
                        stop.done(len(done))
                return n, time.process_time() - begin

            (n, seconds), stopped = collective_flag(comm, lambda: stop is not None and stop.received, build)
            row, busy = row + n, busy + seconds
            if stopped:
                break
        busy = comm.allgather(busy)
    if not stopped:
        log(f"row building per rank (CPU): slowest {max(busy):.3f} s, mean {np.mean(busy):.3f} s, "
            f"imbalance {100 * (max(busy) / max(np.mean(busy), 1e-12) - 1):.1f}%")
    return row, done, stopped


def fit(settings, comm=None, log=None, timer=None, checkpoint=None, restart=None, stop=None):
    """Fit the sparse GP(s) described by ``settings`` (FitSettings) on ``comm``'s ranks.

    checkpoint: a folder where the rows and the models are saved before the solve; restart: a
    folder with such a checkpoint (complete, or partial after a stop), made with the same
    settings, to go on from (any number of ranks). stop: a :class:`pargap.fitting.checkpoint.StopSignal`;
    once it fires, what is done is saved (to checkpoint, else restart, else
    ``<gp_file>.checkpoint``) and :class:`pargap.fitting.checkpoint.Stopped` is raised on every rank.
    Returns the Potential on every rank; writing it is :func:`write_potential`'s job."""
    from pargap.fitting import checkpoint as saved

    comm = comm or SerialComm()
    log = log or Log(comm)
    timer = timer or PhaseTimer(comm, log)
    rank, size = comm.Get_rank(), comm.Get_size()
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
        seed = settings.rnd_seed
        if seed < 0:
            seed = comm.bcast(int(np.random.SeedSequence().entropy % 2**31) if rank == 0 else None, root=0)
        if not settings.gap:  # charge models only: no energy model, no energies needed
            return fit_charges_only(settings, comm, log, timer, seed)
        structures, models, e0, data_hash, n_structures = build_models(settings, comm, log, timer, seed, stop, core)
        block = np.empty((sum(s.n_rows for s in structures), sum(m.n_sparse for m in models) + 1), order="F")
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
        if solver == "scalapack":  # K_MM built and factorised distributed: no rank holds M x M
            def tile(rows, cols):
                return covariance_sparse_tile(models, settings.sparse_jitter, rows, cols)

            solution = collective(comm, scalapack_solve, comm, block, tile)
        else:
            def prior_factor():  # K_MM = U^T U, needed on rank 0 only
                return cholesky_factor(_block_diagonal([m.covariance_sparse(settings.sparse_jitter) for m in models]))

            U = collective(comm, lambda: prior_factor() if rank == 0 else None)
            if solver == "serial":
                blocks = comm.gather(block, root=0)
                solution = solve_on_root(comm, lambda: serial_solve_block(np.vstack(blocks), U))
            else:
                solution = tsqr_solve_block(comm, block, U)
        del block
        log(f"solved by {solver}: condition estimate {solution.condition:.3e}, "
            f"residual {solution.residual:.4e}")
    start = 0
    for m in models:
        m.alpha = solution.alpha[start:start + m.n_sparse]
        start += m.n_sparse
    charge_models, charge_info = fit_charge_models(settings, comm, log, timer, seed)  # a GP of its own

    provenance = {
        "pargap_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "ranks": size,
        "at_file": os.path.abspath(settings.at_file),
        "at_file_sha256": data_hash,
        "rnd_seed": seed,
        "condition_estimate": solution.condition,
        "n_rows": int(n_total),
        "solver": solver,
    } | charge_info
    store = settings.store_covariance
    if store is None:
        store = M <= STORE_COVARIANCE_MAX_M
    if store and solver == "scalapack":
        log("no predictive-variance factor (/gp) in the potential: the ScaLAPACK solver keeps R distributed "
            "(solver = \"tsqr\" keeps it, when its triangles fit on rank 0)")
    return Potential(models, e0, settings_toml, provenance, core=core, charge_models=charge_models,
                     factor=solution.factor if store else None, sparse_jitter=settings.sparse_jitter)


STORE_COVARIANCE_MAX_M = 20000
"""Beyond this many sparse points the (M, M) factor for the predictive variance is not stored by
default (store_covariance = true forces it: M^2 * 4 bytes on disk, the upper triangle)."""


def _block_diagonal(blocks):
    import scipy.linalg

    return scipy.linalg.block_diag(*blocks)


def write_potential(comm, potential, path):
    """Rank 0 writes the file atomically; a failure there is raised on every rank."""
    def write():
        if comm.Get_rank() == 0:
            try:
                potential.save(path)
            except OSError as exc:
                raise PargapError(f"cannot write {path}: {exc}") from None

    collective(comm, write)


__all__ = ["fit", "write_potential"]
