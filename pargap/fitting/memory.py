"""Per-rank memory of a fit, estimated from the data's sizes before fitting (``pargap-fit --dry-run``).

Each rank's resident memory, phase by phase (MB = 2^20 bytes), is modelled as

    baseline      interpreter, numpy/scipy/ASE/h5py imports (BASE_MB), the numba runtime and
                  compiled row loops (NUMBA_MB, + SOAP_MB with a SOAP model), MPI (MPI_MB if P > 1)
    structures    the rank's ase.Atoms and observations: STRUCTURE_BYTES + ATOM_BYTES per atom
    descriptors   descriptor values of the rank's structures, one model at a time (no gradients;
                  each model's pool is freed once its sparse points are chosen), the largest:
                  n_desc (D + 2) 8 bytes, gathered in chunks and held about once
    gradients     the transient of the worst structure while its rows are built, per model:
                  G (3D + 8) 8 bytes of descriptor gradients (G gradient rows; SOAP's are built
                  over groups of centres, so G <= GRADIENT_CHUNK_BYTES / (3D 8)), the kernel-gradient
                  block min(G, chunk) 3 M_k 8 bytes, and n_desc M_k 8 bytes x 4 (K, A, B, K~),
                  plus one model's force rows n_atoms 3 M_k 8 bytes (written into the row block
                  model by model, pargap.fitting.rows.structure_rows)
    rows          one row block [K_NM | y] (the rows are streamed: built a block at a time and
                  folded into the factor), min(rank's rows, block rows) (M+1) 8 bytes, block rows
                  from row_block_mb; plus the rank's triangle R being folded into, (M+1)^2 8 bytes
                  (ScaLAPACK: its share of the distributed factor, and the block's share of the
                  panel it is folded as, one more block)
    solve         the factor at the solve (pargap.linalg.factor.factor_bytes): on rank 0 for TSQR
                  its triangle, the copy the prior is folded into and the prior rows; on the other
                  ranks two triangles of the tree merge; ScaLAPACK its share, O(M^2 / P)

and the estimated peak is the largest phase. The constants were measured on this machine
(Linux, CPython 3.11, numpy/OpenBLAS, Open MPI 4.1, one thread per rank): the baseline from fits
of 6 small structures (2b alone: 172 MB; with SOAP: 177 MB; +10 MB on rank 0 under MPI), the
data terms from fits whose rows and triangles reach 240 MB and 150 MB (within 5%, P = 1 and 2;
tests/test_memory.py, bench/scaling.py). ru_maxrss (the measured peak) counts resident pages, as
a batch system's memory limit does. Other platforms may shift the baseline by some 10 MB.

The data's sizes come from :func:`sample_sizes`: the frame index (atom counts) of every structure
and, for a sample of structures (all of them up to ``sample``, else the largest and an even spread),
their observation rows, neighbour-pair cost and, per model, descriptor and gradient counts;
structures outside the sample are scaled from the sample by their atom count.
"""

from dataclasses import dataclass, field

import numpy as np

MB = 2**20
BASE_MB = 112.0
SOAP_MB = 5.0
NUMBA_MB = 60.0
MPI_MB = 10.0
STRUCTURE_BYTES = 20_000
ATOM_BYTES = 2_000
DESCRIPTOR_COPIES = 1.0
GRADIENT_FACTOR = 1.5
SAMPLE = 256


@dataclass
class DataSizes:
    """Sizes of a training set per structure (arrays over all structures, estimated outside the
    sample) and per model (lists over the expanded models).

    n_atoms, n_rows, cost (N_s,); desc (n_models, N_s) descriptors; grad (n_models, N_s) gradient
    rows; dims, n_sparse per model; has_soap; sampled: how many structures were measured."""

    n_atoms: np.ndarray
    n_rows: np.ndarray
    cost: np.ndarray
    desc: np.ndarray
    grad: np.ndarray
    dims: list
    n_sparse: list
    has_soap: bool
    sampled: int = 0
    names: list = field(default_factory=list)


def sample_indices(n_atoms, sample=SAMPLE):
    """All structures if there are at most ``sample``, else the sample/4 largest and an even spread."""
    n = len(n_atoms)
    if n <= sample:
        return list(range(n))
    largest = np.argsort(-np.asarray(n_atoms), kind="stable")[: sample // 4]
    spread = np.linspace(0, n - 1, sample - len(largest)).round().astype(int)
    return sorted(set(largest.tolist()) | set(spread.tolist()))


def sample_sizes(settings, sample=SAMPLE):
    """DataSizes of ``settings.at_file`` with the models of ``settings`` (serial, one process)."""
    from pargap.data.frames import extract, read_frames, scan_frames
    from pargap.fitting.species import expand_models, species_order
    from pargap.fitting.structures import structure_cost
    from pargap.parallel import SerialComm

    index = scan_frames(settings.at_file)
    n_atoms = np.array(index.n_atoms, dtype=float)
    which = sample_indices(index.n_atoms, sample)
    frames = read_frames(index, which)
    structures = [extract(a, i, settings, settings.at_file, check_sigma=False) for a, i in zip(frames, which)]
    species = species_order(SerialComm(), structures)
    expanded = expand_models(settings, species)
    n = len(index)
    rows, cost = np.zeros(n), np.zeros(n)
    desc, grad = np.zeros((len(expanded), n)), np.zeros((len(expanded), n))
    for s in structures:
        i = s.index
        rows[i] = s.n_rows
        cost[i] = structure_cost(s.atoms, settings.cutoff)
        gradients = s.forces is not None or s.virial is not None
        for k, (descriptor, _, _, _) in enumerate(expanded):
            d = descriptor.compute(s.atoms, gradients=gradients)
            desc[k, i] = len(d)
            grad[k, i] = 0 if d.grad_owner is None else len(d.grad_owner)
    measured = np.zeros(n, dtype=bool)
    measured[which] = True
    per_atom = lambda v: v[measured].sum() / max(n_atoms[measured].sum(), 1)  # noqa: E731
    rest = ~measured
    rows[rest] = np.ceil(per_atom(rows) * n_atoms[rest])
    cost[rest] = per_atom(cost) * n_atoms[rest]
    for k in range(len(expanded)):
        desc[k, rest] = per_atom(desc[k]) * n_atoms[rest]
        grad[k, rest] = per_atom(grad[k]) * n_atoms[rest]
    n_sparse = []
    for k, (descriptor, _, g, _) in enumerate(expanded):
        m = g.n_sparse or 0
        if g.sparse_method in ("index_file", "file", "none") or not m:
            m = _count_sparse(g) if g.sparse_method in ("index_file", "file") else int(desc[k].sum())
        n_sparse.append(int(min(m, desc[k].sum())))
    return DataSizes(n_atoms, rows, cost, desc, grad, [d.dimension for d, _, _, _ in expanded], n_sparse,
                     any(d.name == "soap" for d, _, _, _ in expanded), len(which),
                     [d.name for d, _, _, _ in expanded])


def _count_sparse(g):
    try:
        with open(g.sparse_file) as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def gradient_bytes(n_atoms, desc, grad, dims, n_sparse, chunked=None):
    """Transient bytes while one structure's rows are built (see the module docstring); the models
    flagged in ``chunked`` (SOAP) build their gradients over groups of centres of at most
    GRADIENT_CHUNK_BYTES (pargap.gp.observations.single_model_rows)."""
    from pargap.gp.observations import GRADIENT_CHUNK_BYTES, gradient_chunk

    worst = 0.0
    for n_d, G, D, M_k, by_centres in zip(desc, grad, dims, n_sparse, chunked or [False] * len(dims)):
        if by_centres:
            G = min(G, max(GRADIENT_CHUNK_BYTES // (3 * D * 8), 1))
        worst = max(worst, G * (3 * D + 8) * 8 + min(G, gradient_chunk(M_k)) * 3 * M_k * 8 + 4 * n_d * M_k * 8
                    + n_atoms * 3 * M_k * 8)
    return GRADIENT_FACTOR * worst


def estimate(sizes, structures, rank, size, solver="tsqr", block_rows=None):
    """Estimated peak MB of each phase on ``rank`` of ``size`` owning ``structures`` (indices),
    for the solver "tsqr", "serial" or "scalapack", with row blocks of ``block_rows`` rows (None:
    all the rank's rows in one block)."""
    from pargap.linalg.factor import factor_bytes

    which = list(structures)
    M = sum(sizes.n_sparse)
    n = M + 1
    base = BASE_MB + NUMBA_MB * (len(which) > 0) + SOAP_MB * sizes.has_soap + MPI_MB * (size > 1)
    held = (STRUCTURE_BYTES * len(which) + ATOM_BYTES * sizes.n_atoms[which].sum()) / MB
    desc = max((sizes.desc[k, which].sum() * (D + 2) * 8 for k, D in enumerate(sizes.dims)),
               default=0.0) * DESCRIPTOR_COPIES / MB
    chunked = [name == "soap" for name in sizes.names] if sizes.names else None
    grads = max((gradient_bytes(sizes.n_atoms[i], sizes.desc[:, i], sizes.grad[:, i], sizes.dims, sizes.n_sparse,
                                chunked) for i in which), default=0.0) / MB
    rows = sizes.n_rows[which].sum()
    largest = sizes.n_rows[which].max(initial=0)
    block = min(rows, max(block_rows or rows, largest)) * n * 8 / MB
    if solver == "scalapack":  # the block's share of the distributed panel it is folded as: one more block
        folding = solving = factor_bytes(solver, n, size) / MB
        block *= 2
    else:
        triangle = n * n * 8 / MB
        folding = triangle
        solving = factor_bytes(solver, n, size) / MB if rank == 0 else 2 * triangle
    phases = {
        "descriptors": base + held + desc,
        "gradients": base + held + grads,
        "covariance rows": base + held + block + folding + grads,
        "solve": base + held + solving,
    }
    phases["peak"] = max(phases.values())
    return phases


def planned_solver(sizes, solver="auto", memory_per_rank=None):
    """The solver the fit's "auto" rule would pick for these sizes:
    :func:`~pargap.linalg.solve.auto_solver` for ``memory_per_rank`` (bytes; default
    PARGAP_MEMORY_PER_RANK, else this machine's MemAvailable per core)."""
    import os

    from pargap.linalg.solve import auto_solver, node_memory_per_rank

    if solver != "auto":
        return solver
    if memory_per_rank is None:
        memory_per_rank = node_memory_per_rank(os.cpu_count() or 1)
    return auto_solver(sum(sizes.n_sparse), memory_per_rank)[0]


def plan(sizes, size, solver="auto", row_block_mb=None):
    """Partition the structures over ``size`` ranks as the fit does (by neighbour-pair cost) ->
    (Partition per rank, estimate per rank) for ``solver`` (as planned_solver decides for auto)
    and row blocks of ``row_block_mb`` (None: the fit's default for the planned memory per rank)."""
    import os

    from pargap.fitting.rows import MB as BLOCK_MB, default_row_block_mb
    from pargap.linalg.solve import node_memory_per_rank
    from pargap.parallel import partition_structures

    parts = [partition_structures(sizes.n_atoms.astype(int).tolist(), r, size,
                                  sizes.cost.tolist() if size > 1 else None) for r in range(size)]
    solver = planned_solver(sizes, solver)
    M = sum(sizes.n_sparse)
    if row_block_mb is None:
        row_block_mb = default_row_block_mb(node_memory_per_rank(os.cpu_count() or 1), M + 1)
    block_rows = max(1, int(row_block_mb * BLOCK_MB // (8 * (M + 1))))
    return parts, [estimate(sizes, p.structures, p.rank, size, solver, block_rows) for p in parts]


def report(sizes, size, stream=None, solver="auto", row_block_mb=None):
    """The --dry-run table: per rank, the rows, descriptors and estimated peak MB of each phase."""
    import sys

    stream = stream or sys.stdout
    parts, estimates = plan(sizes, size, solver, row_block_mb)
    M = sum(sizes.n_sparse)
    n = len(sizes.n_atoms)
    print(f"[pargap] dry run: {n} structures, {int(sizes.n_atoms.sum())} atoms, {int(sizes.n_rows.sum())} rows "
          f"x {M} sparse points ({', '.join(f'{nm} {m}' for nm, m in zip(sizes.names, sizes.n_sparse))}); "
          f"{sizes.sampled} structures measured, the rest scaled by atom count", file=stream)
    chosen = planned_solver(sizes, solver)
    print(f"[pargap] estimated peak memory per rank (MB) on {size} rank(s), "
          f"cost imbalance {100 * parts[0].imbalance:.1f}%; solve column for the {chosen} solver"
          + (" (auto; set PARGAP_MEMORY_PER_RANK to the compute nodes' memory per rank to plan for them)"
             if solver == "auto" else ""), file=stream)
    header = f"{'rank':>6s} {'structures':>10s} {'rows':>10s} {'descriptors':>12s} {'gradients':>10s} " \
             f"{'cov. rows':>10s} {'solve':>10s} {'peak':>10s}"
    print(header, file=stream)
    shown = range(size) if size <= 16 else sorted({0, 1, size - 1} | {int(np.argmax([e['peak'] for e in estimates]))})
    for r in shown:
        e = estimates[r]
        which = list(parts[r].structures)
        print(f"{r:6d} {len(which):10d} {int(sizes.n_rows[which].sum()):10d} {e['descriptors']:12.1f} "
              f"{e['gradients']:10.1f} {e['covariance rows']:10.1f} {e['solve']:10.1f} {e['peak']:10.1f}", file=stream)
    peak = max(e["peak"] for e in estimates)
    print(f"[pargap] largest estimated peak per rank: {peak:.0f} MB; ask the batch system for about "
          f"{memory_request(peak)} per rank", file=stream)
    return estimates


def memory_request(peak_mb, margin=1.2):
    """A per-rank memory request with a margin, rounded up to 100 MB, as Slurm/PBS want it ("1200M")."""
    return f"{int(np.ceil(peak_mb * margin / 100.0) * 100)}M"
