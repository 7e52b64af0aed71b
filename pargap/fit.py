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
from pargap.data import extract, is_isolated_atom, read_frames, scan_frames
from pargap.descriptors import make_descriptor
from pargap.errors import ConfigError, InputError, PargapError
from pargap.kernels import make_kernel
from pargap.model import Model
from pargap.observations import VIRIAL_COMPONENTS, hessian_row, model_rows
from pargap.parallel import SerialComm, collective, gather_sorted, on_root, partition_structures
from pargap.potential import Potential
from pargap.progress import Log, PhaseTimer
from pargap.solve import (choose_solver, cholesky_factor, covariance_sparse_tile, scalapack_solve,
                          serial_solve_block, tsqr_solve_block)
from pargap.sparsify import DescriptorPool, select_sparse


def structure_cost(atoms, cutoff):
    """Row-building cost of a structure: its neighbour pairs within the cutoff plus its atoms
    (descriptor gradients grow with the pairs, force rows with the atoms)."""
    from pargap.neighbours import neighbour_list

    return len(neighbour_list(atoms, cutoff)[0]) + len(atoms)


def load_structures(comm, settings, log, check_sigma=True):
    """Index the file on rank 0, partition, read and validate this rank's structures.

    A first partition by atom counts lets every rank read its share and count neighbour pairs;
    with more than one rank, the structures are then re-partitioned by that cost and each rank
    reads the ones it gained (reading is cheap beside the rows)."""
    path = settings.at_file
    index = on_root(comm, scan_frames, path)
    rank, size = comm.Get_rank(), comm.Get_size()
    part = partition_structures(index.n_atoms, rank, size)

    def read(which):
        atoms = read_frames(index, which)
        return {i: extract(a, i, settings, path, check_sigma) for a, i in zip(atoms, which)}

    mine = collective(comm, read, part.structures)
    if size > 1:
        costs = np.zeros(len(index))
        for part_costs in comm.allgather({i: structure_cost(s.atoms, settings.cutoff) for i, s in mine.items()}):
            for i, c in part_costs.items():
                costs[i] = c
        part = partition_structures(index.n_atoms, rank, size, costs)
        gained = [i for i in part.structures if i not in mine]
        mine.update(collective(comm, read, gained))
    log(f"{len(index)} structures, {sum(index.n_atoms)} atoms in {path}; {part.size} rank(s), "
        f"cost imbalance {100 * part.imbalance:.1f}%")
    return [mine[i] for i in part.structures], part


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


def compute_e0(comm, settings, structures, species):
    """{Z: e0 in eV} by explicit values, isolated atoms or the average energy per atom, plus e0_offset."""
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
            (s.index, int(s.atoms.numbers[0]), s.energy) for s in structures
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
        per = gather_sorted(comm, [(s.index, s.energy, s.n_atoms) for s in structures if s.energy is not None])
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


def expand_models(settings, species):
    """(descriptor, kernel, gap settings, gap index) for every model, after species expansion."""
    expanded = []
    for k, g in enumerate(settings.gap):
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


def covariance_rows(structures, models, e0, file=None, hessian_delta=0.01):
    """This rank's rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y], (n_p, M+1), Fortran-ordered so that
    the QR factorises it in place.

    Targets: E - sum e0 (eV); F (eV/A); the 6 independent virial components W_kl (eV); Hessian
    eigenvalues (eV/A^2) by central differences of force rows with displacement hessian_delta."""
    n_rows = sum(s.n_rows for s in structures)
    M = sum(m.n_sparse for m in models)
    block = np.empty((n_rows, M + 1), order="F")
    A, b = block[:, :M], block[:, M]
    row = 0
    for s in structures:
        first = row
        rows = model_rows(s.atoms, models, gradients=s.forces is not None or s.virial is not None)
        if s.energy is not None:
            baseline = sum(e0[int(z)] for z in s.atoms.numbers)
            A[row] = rows.energy / s.sigma_energy
            b[row] = (s.energy - baseline) / s.sigma_energy
            row += 1
        if s.forces is not None:
            n = 3 * s.n_atoms
            A[row:row + n] = (rows.forces / s.sigma_forces[:, :, None]).reshape(n, M)
            b[row:row + n] = (s.forces / s.sigma_forces).ravel()
            row += n
        if s.virial is not None:
            for k, l in VIRIAL_COMPONENTS:
                A[row] = rows.virial[k, l] / s.sigma_virial[k, l]
                b[row] = s.virial[k, l] / s.sigma_virial[k, l]
                row += 1
        for eigenvalue, eigenvector in s.hessian:
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


def build_rows(settings, comm, log, timer, seed):
    """Phases read, descriptors, sparse points and covariance rows: (models, e0, this rank's rows
    block (n_p, M+1), data hash)."""
    with timer.phase("read"):
        structures, part = load_structures(comm, settings, log)
        data_hash = on_root(comm, file_hash, settings.at_file)  # of the data as read
        species = species_order(comm, structures)
        e0 = collective(comm, compute_e0, comm, settings, structures, species)
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

    expanded = expand_models(settings, species)
    with timer.phase("descriptors"):
        pools = descriptor_pools(structures, expanded)

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

    with timer.phase("covariance rows"):
        def rows_timed():
            start = time.perf_counter()
            rows = covariance_rows(structures, models, e0, settings.at_file, settings.hessian_delta)
            return rows, time.perf_counter() - start

        block, busy = collective(comm, rows_timed)
        busy = comm.allgather(busy)
    if len(busy) > 1:
        log(f"row building per rank: slowest {max(busy):.3f} s, mean {np.mean(busy):.3f} s, "
            f"imbalance {100 * (max(busy) / max(np.mean(busy), 1e-12) - 1):.1f}%")
    return models, e0, block, data_hash


def fit(settings, comm=None, log=None, timer=None, checkpoint=None, restart=None):
    """Fit the sparse GP(s) described by ``settings`` (FitSettings) on ``comm``'s ranks.

    checkpoint: a folder where the rows and the models are saved before the solve; restart: a
    folder with such a checkpoint, made with the same settings, to solve from directly (any
    number of ranks). Returns the Potential on every rank; writing it is
    :func:`write_potential`'s job."""
    from pargap import checkpoint as saved

    comm = comm or SerialComm()
    log = log or Log(comm)
    timer = timer or PhaseTimer(comm, log)
    rank, size = comm.Get_rank(), comm.Get_size()
    if restart:
        with timer.phase("restart"):
            models, e0, seed, block = saved.load(comm, restart, settings)
            data_hash = on_root(comm, file_hash, settings.at_file)
        log(f"restarted from {restart}: {sum(m.n_sparse for m in models)} sparse points")
    else:
        seed = settings.rnd_seed
        if seed < 0:
            seed = comm.bcast(int(np.random.SeedSequence().entropy % 2**31) if rank == 0 else None, root=0)
        models, e0, block, data_hash = build_rows(settings, comm, log, timer, seed)
    # the settings as run: a drawn seed is recorded, so the file's settings reproduce the fit
    settings_toml = dataclasses.replace(settings, rnd_seed=seed).to_toml()
    n_total = comm.allreduce(block.shape[0])
    M = block.shape[1] - 1
    log(f"K_NM: {n_total} rows x {M} sparse points; this rank {block.nbytes / 2**20:.1f} MB")
    if checkpoint and not restart:
        with timer.phase("checkpoint"):
            saved.save(comm, checkpoint, models, e0, settings_toml, seed, block)
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
                solution = on_root(comm, lambda: serial_solve_block(np.vstack(blocks), U))
            else:
                solution = tsqr_solve_block(comm, block, U)
        del block
        log(f"solved by {solver}: condition estimate {solution.condition:.3e}, "
            f"residual {solution.residual:.4e}")
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
    }
    return Potential(models, e0, settings_toml, provenance)


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
