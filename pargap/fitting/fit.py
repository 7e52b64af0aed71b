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
from pargap.linalg.factor import RowFactor
from pargap.linalg.solve import choose_solver, covariance_sparse_tile
from pargap.fitting.stream import fold_rows, row_block_rows, structure_rows
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


def compute_e0(comm, settings, structures, species, core=None):
    """{Z: e0 in eV} by explicit values, isolated atoms or the average energy per atom, plus e0_offset.
    Energies are taken minus the baseline (core) potential's, as gap_fit does."""
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
        per = gather_sorted(comm, [(s.index, energy(s), s.n_atoms) for s in structures if s.energy is not None])
        if not per:
            raise InputError("e0_method=average needs energies, and no structure has one", file=settings.at_file)
        mean = sum(e / n for _, e, n in per) / len(per)  # mean over frames of E/N, as gap_fit
        values = {z: mean for z in species}
    known = list(species) + [z for z in values if z not in species]  # given e0 of absent species too
    return {z: values.get(z, 0.0) + settings.e0_offset for z in known}


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
    the QR factorises it in place (written into ``out``, a view of that shape, if given); the
    structures one after the other, each by :func:`pargap.fitting.stream.structure_rows`.
    core: the baseline potential subtracted from the targets (CorePotential or None)."""
    n_rows = sum(s.n_rows for s in structures)
    M = sum(m.n_sparse for m in models)
    block = np.empty((n_rows, M + 1), order="F") if out is None else out
    row = 0
    for s in structures:
        structure_rows(s, models, e0, block[row:row + s.n_rows], file, hessian_delta, core)
        row += s.n_rows
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


def build_rows(settings, comm, log, timer, seed, core=None):
    """Phases read, descriptors, sparse points and covariance rows, without checkpoints or stop
    requests, all rows held (for the likelihood's hyperparameter search): (models, e0, this
    rank's rows block (n_p, M+1), data hash). core: the baseline potential subtracted from the
    targets, or None."""
    structures, models, e0, data_hash, _ = build_models(settings, comm, log, timer, seed, core=core)
    with timer.phase("covariance rows"):
        block = collective(comm, covariance_rows, structures, models, e0, settings.at_file, settings.hessian_delta,
                           core)
    return models, e0, block, data_hash



def fit(settings, comm=None, log=None, timer=None, checkpoint=None, restart=None, stop=None):
    """Fit the sparse GP(s) described by ``settings`` (FitSettings) on ``comm``'s ranks.

    The energy models' rows are streamed (:mod:`pargap.fitting.stream`): each rank builds them a
    block of at most row_block_mb at a time and folds the block into the factor, so no rank holds
    its rows. checkpoint: a folder where the factor and the models are saved before the solve;
    restart: a folder with such a checkpoint (complete, or partial after a stop), made with the
    same settings, to go on from (any number of ranks). stop: a
    :class:`pargap.fitting.checkpoint.StopSignal`; once it fires (while rows are built or during
    the solve), the factor of what is done is saved (to checkpoint, else restart, else
    ``<gp_file>.checkpoint``) and :class:`pargap.fitting.checkpoint.Stopped` is raised on every
    rank. Returns the Potential on every rank; writing it is :func:`write_potential`'s job."""
    from pargap.fitting import checkpoint as saved

    comm = comm or SerialComm()
    log = log or Log(comm)
    timer = timer or PhaseTimer(comm, log)
    rank, size = comm.Get_rank(), comm.Get_size()
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
            data_hash = on_root(comm, file_hash, settings.at_file)
            made_from = on_root(comm, saved.saved_data_hash, restart)

            def same_data():  # the same verdict on every rank, raised as one error
                if made_from and made_from != data_hash:  # the factor would be of other structures
                    raise InputError(f"the training data changed since the checkpoint in {restart} was written "
                                     "(SHA-256 differs): restart with the same file, or fit afresh",
                                     file=settings.at_file)

            collective(comm, same_data)
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
        seed = settings.rnd_seed
        if seed < 0:
            seed = comm.bcast(int(np.random.SeedSequence().entropy % 2**31) if rank == 0 else None, root=0)
        if not settings.gap:  # charge models only: no energy model, no energies needed
            return fit_charges_only(settings, comm, log, timer, seed)
        structures, models, e0, data_hash, n_structures = build_models(settings, comm, log, timer, seed, stop, core)
        # the charge GP (a GP of its own) from the structures in memory, before the energy rows, so
        # that every checkpoint holds it
        charge_models, charge_info = fit_charge_models(settings, comm, log, timer, seed, structures)
        covered, n_saved = [], 0
        M = sum(m.n_sparse for m in models)
        solver = _solver(comm, M, settings.solver, log)
        factor = RowFactor.create(comm, M + 1, solver)
    # the settings as run: a drawn seed is recorded, so the file's settings reproduce the fit
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    n_new = comm.allreduce(sum(s.n_rows for s in structures))
    n_total = n_saved + n_new
    store = settings.store_covariance  # keep R for the predictive variance
    if store is None:
        store = M <= STORE_COVARIANCE_MAX_M

    def save(done, n_rows):
        with timer.phase("checkpoint"):
            saved.save(comm, folder, models, e0, settings_toml, seed, factor.checkpoint_state(), done, n_structures,
                       n_rows, data_hash, charge_models, charge_info)

    def stopped(done, n_rows, when):
        save(done, n_rows)
        n_done = comm.bcast(len(done) if rank == 0 else None, root=0)
        raise saved.Stopped(f"stopped (SIGTERM or --stop-after) {when}: checkpoint of {n_done} of "
                            f"{n_structures} structures written to {folder}; resume with --restart {folder}", folder)

    with factor:  # closed (ScaLAPACK's BLACS grids freed) on every path out
        with timer.phase("covariance rows"):
            rows_per_block = collective(comm, row_block_rows, comm, settings, structures, M + 1)
            log(f"K_NM: {n_total} rows x {M} sparse points, built and folded into the {solver} factor in blocks of "
                f"at most {rows_per_block} rows ({rows_per_block * (M + 1) * 8 / 2**20:.1f} MB) per rank")

            def build(s, out):
                structure_rows(s, models, e0, out, settings.at_file, settings.hessian_delta, core)

            new, interrupted, building, folding = fold_rows(comm, factor, structures, build, rows_per_block, stop)
            finished = set(new)
            folded = sum(s.n_rows for s in structures if s.index in finished)
            done = _merged_indices(comm, covered, new)
            n_done = n_saved + comm.allreduce(folded)
        if interrupted or (stop is not None and stop.agreed()):  # a stop request before the solve
            stopped(done, n_done, "while building rows" if n_done < n_total else "before the solve")
        busy = comm.allgather(building)
        log(f"row building per rank (CPU): slowest {max(busy):.3f} s, mean {np.mean(busy):.3f} s, imbalance "
            f"{100 * (max(busy) / max(np.mean(busy), 1e-12) - 1):.1f}%; folding: slowest "
            f"{max(comm.allgather(folding)):.3f} s")
        complete = restart if restart and not n_new else None  # a checkpoint already holding every row
        if checkpoint and not complete:
            save(done, n_done)
            complete = checkpoint
            log(f"checkpoint written to {checkpoint}")

        with timer.phase("solve"):
            if stop is not None:
                stop.entering("solve")

            def prior(rows, cols):  # tiles of K_MM + jitter I
                return covariance_sparse_tile(models, settings.sparse_jitter, rows, cols)

            solution = factor.solve(prior, keep_factor=bool(store) and solver != "scalapack")
            log(f"solved by {solver}: condition estimate {solution.condition:.3e}, "
                f"residual {solution.residual:.4e}")
        if stop is not None and stop.agreed():  # a stop request during the solve
            if not complete:
                stopped(done, n_done, "during the solve")
            raise saved.Stopped(f"stopped (SIGTERM or --stop-after) during the solve: the checkpoint in {complete} "
                                f"holds every structure; resume with --restart {complete}", complete)
    start = 0
    for m in models:
        m.alpha = solution.alpha[start:start + m.n_sparse]
        start += m.n_sparse

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
        "row_block_mb": rows_per_block * (M + 1) * 8 / 2**20,  # as used: the memory plan's input
    } | charge_info
    if store and solver == "scalapack":
        log("no predictive-variance factor (/gp) in the potential: the ScaLAPACK solver keeps R distributed "
            "(solver = \"tsqr\" keeps it, when its triangles fit on rank 0)")
    return Potential(models, e0, settings_toml, provenance, core=core, charge_models=charge_models,
                     factor=solution.factor if store else None, sparse_jitter=settings.sparse_jitter)


STORE_COVARIANCE_MAX_M = 20000
"""Beyond this many sparse points the (M, M) factor for the predictive variance is not stored by
default (store_covariance = true forces it: M^2 * 4 bytes on disk, the upper triangle)."""


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
