"""Per-rank memory of a fit, estimated from the data's sizes before fitting (``pargap-fit --dry-run``,
the end-of-fit report, ``jobscripts/submit-slurm.sh``).

Each rank's resident memory, phase by phase (MB = 2^20 bytes), is modelled as

    baseline      interpreter, numpy/scipy/ASE/h5py imports (BASE_MB), the numba runtime and
                  compiled row loops (NUMBA_MB, + SOAP_MB with a SOAP model), MPI (MPI_MB if P > 1)
    structures    the rank's ase.Atoms and observations: STRUCTURE_BYTES + ATOM_BYTES per atom
    descriptors   model by model (pargap.fitting.models.sparse_models: each model's pool is freed
    and sparse    once its points are chosen): the largest of a model's descriptor values (no
    points        gradients) n_desc (D + 2) 8 bytes (gathered in POOL_CHUNK_BYTES chunks, held once),
                  alone or with the transient of its selection (:func:`selection_bytes`: hash records,
                  compared descriptors, CUR's D x D triangles); beside them the chosen
                  M_k x (D + 1) points, kept on every rank
    covariance    the rows are streamed: one row block [K_NM | y] of at most row_block_mb (its
    rows          height h: min(rank's rows, max(block rows, largest structure's rows))), h (M+1) 8
                  bytes; the factor being folded into (:func:`fold_bytes`: TSQR its (M+1)^2
                  triangle and tpqrt's panels; ScaLAPACK its share of G, (M+1)^2 / P + 2 h (M+1));
                  the worst structure's transient (:func:`gradient_bytes`): per model G (3D + 8) 8
                  bytes of descriptor gradients (G gradient rows; SOAP's are built over groups of
                  centres, so G <= GRADIENT_CHUNK_BYTES / (3D 8)), the kernel-gradient block
                  min(G, chunk) 3 M_k 8 bytes, n_desc M_k 8 bytes x 4 (K, A, B, K~) and one
                  model's force rows n_atoms 3 M_k 8 bytes
    solve         the factor at the solve (:func:`solve_bytes`, pargap.linalg.factor.factor_bytes):
                  TSQR on rank 0 its triangle, the copy the prior is folded into, the prior rows
                  [U | 0] and the K_MM panels, with PRIOR_COPIES copies of a model's sparse
                  points made by the kernel while it builds them; on the other ranks two triangles of the tree merge
                  and a packed chunk; ScaLAPACK its share, 3 (M+1)^2 / P, and pdgeqrf's panels.
                  ScaLAPACK's G keeps room for a block, h (M+1), to the end
    checkpoint    (--checkpoint, or on SIGTERM) the row block freed, :func:`checkpoint_bytes`: TSQR
                  the triangles merged on rank 0 and written in ROW_CHUNK-row slabs (one copied);
                  ScaLAPACK G's share and R redistributed in row slabs. The potential's write (R's
                  upper triangle gathered on rank 0) holds less than the solve.

and the estimated peak is the largest phase. The sparse points and the structures stay to the end.
The constants were measured on this machine (Linux, CPython 3.11, numpy/OpenBLAS, Open MPI 4.1, one
thread per rank): the baseline from fits of 6 small structures (2b alone: 172 MB; with SOAP: 177 MB;
+10 MB on rank 0 under MPI); the data terms checked against the peak resident set (VmHWM, which
counts resident pages, as a batch system's limit does) on fits where they dominate, within 15% on
every rank:
2b + SOAP Ar cells (P = 1), 4-species SOAP on rMD17 molecules (P = 2), 2-species SOAP SiC at
P = 2 and 16 (oversubscribed) (tests/test_memory.py). Other platforms may shift the baseline by
some 10 MB. The memory per rank that decides the ``auto`` solver and the default row block is read
as the fit reads it (:mod:`pargap.memory_limit`: Slurm, cgroup, MemAvailable, shared by the ranks
on a node).

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
GRADIENT_FACTOR = 1.5
SELECT_RECORD_BYTES = 120
PRIOR_COPIES = 3
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
    methods: list = field(default_factory=list)


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
                     [d.name for d, _, _, _ in expanded], [g.sparse_method for _, _, g, _ in expanded])


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


def selection_bytes(n_desc, D, M_k, method, rank, size):
    """Transient bytes of choosing one model's M_k sparse points from a rank's n_desc descriptors
    of dimension D (pargap.fitting.sparsify.select_sparse): the hash records of the repeated-
    descriptor check and one round of the descriptors compared (pargap.fitting.distinct), for CUR
    the D x D triangles of the tree (its own, a block copy, and a received one or the C-ordered copy
    a rank sends; on rank 0 also the SVD's factors) and a chunk of V_k (pargap.fitting.cur), and the
    chosen points gathered on every rank and put in order (two copies)."""
    from pargap.fitting.cur import CHUNK_BYTES
    from pargap.fitting.distinct import ANSWER_BYTES

    b = n_desc * SELECT_RECORD_BYTES + min(ANSWER_BYTES, n_desc * (D + 1) * 8)
    if method == "cur_points":
        triangles = 5 if rank == 0 else 3
        width = D + D // 2  # a chunk of candidates and its V_k (k at most D / 2)
        b += triangles * D * D * 8 + min(n_desc, max(D, CHUNK_BYTES // (8 * width))) * width * 8
    return b + 2 * M_k * (D + 1) * 8


def fold_bytes(solver, n_columns, size, height, rank):
    """Bytes the factor holds on ``rank`` while row blocks of ``height`` rows are folded in, beyond
    the block itself: tsqr its triangle and tpqrt's panel workspace; serial on rank 0 the same and
    the block received from another rank; scalapack its share of the factor's matrix G
    ((M+1 + P h) rows, block-cyclic), a padded copy of the block and pdgeqrf's workspace."""
    from pargap.linalg.tsqr import PANEL, triangle_resident_bytes

    n = n_columns
    if solver == "scalapack":
        return 8.0 * (n * n / size + 2 * height * n + 4 * 64 * n)
    if solver == "serial" and rank != 0:
        return 0.0
    received = height * n if solver == "serial" and size > 1 else 0
    return triangle_resident_bytes(n) + 8.0 * (2 * PANEL * n + received)


def solve_bytes(solver, n_columns, size, rank):
    """Bytes of the factor at the solve on ``rank`` (pargap.linalg.factor.factor_bytes on rank 0 for
    tsqr and serial; a tree rank of tsqr holds its triangle, a received one if it receives
    (:func:`triangles_held`) and a packed chunk)."""
    from pargap.linalg.factor import factor_bytes
    from pargap.linalg.tsqr import CHUNK, triangle_resident_bytes

    n = n_columns
    if solver == "scalapack" or rank == 0:
        return factor_bytes(solver, n, size)
    if solver == "serial":
        return 0.0
    return triangles_held(rank, size) * triangle_resident_bytes(n) + 8.0 * min(CHUNK, n * (n + 1) // 2)


def triangles_held(rank, size):
    """Triangles a rank of the TSQR tree holds at once (pargap.linalg.tsqr.reduce_to_root): its own
    and, on a rank that receives (even, with a partner), the one received."""
    return 2 if rank % 2 == 0 and rank + 1 < size else 1


def checkpoint_bytes(solver, n_columns, size, height, rank):
    """Bytes of the factor while a checkpoint is written (pargap.fitting.checkpoint.save), the row
    block freed: TSQR merges the triangles on rank 0 (two triangles and a packed chunk on a rank of
    the tree) and writes its triangle in slabs of ROW_CHUNK rows (a C-ordered copy of one slab);
    ScaLAPACK's G share plus the rank's slab of R redistributed by rows and its copy."""
    from pargap.fitting.checkpoint import ROW_CHUNK
    from pargap.linalg.tsqr import CHUNK, triangle_resident_bytes

    n = n_columns
    if solver == "scalapack":
        slab = -(-n // size)
        return 8.0 * (n * n / size + height * n + slab * n + min(ROW_CHUNK, slab) * n)
    if solver == "serial" and rank != 0:
        return 0.0
    triangle = triangle_resident_bytes(n)
    merge = (triangles_held(rank, size) * triangle + 8.0 * min(CHUNK, n * (n + 1) // 2)
             if solver == "tsqr" and size > 1 else triangle)
    return max(merge, triangle + 8.0 * min(ROW_CHUNK, n) * n if rank == 0 else 0)


def estimate(sizes, structures, rank, size, solver="tsqr", block_rows=None):
    """Estimated peak MB of each phase on ``rank`` of ``size`` owning ``structures`` (indices),
    for the solver "tsqr", "serial" or "scalapack", with row blocks of ``block_rows`` rows (None:
    all the rank's rows in one block). See the module docstring."""
    from pargap.fitting.models import POOL_CHUNK_BYTES

    which = list(structures)
    M = sum(sizes.n_sparse)
    n = M + 1
    base = BASE_MB + NUMBA_MB * (len(which) > 0) + SOAP_MB * sizes.has_soap + MPI_MB * (size > 1)
    held = (STRUCTURE_BYTES * len(which) + ATOM_BYTES * sizes.n_atoms[which].sum()) / MB
    local = [sizes.desc[k, which].sum() for k in range(len(sizes.dims))]
    pools = [n_k * (D + 2) * 8 / MB for n_k, D in zip(local, sizes.dims)]
    methods = sizes.methods or ["cur_points"] * len(sizes.dims)
    sparse = sum(M_k * (D + 1) * 8 for M_k, D in zip(sizes.n_sparse, sizes.dims)) / MB
    selecting = max((pool + selection_bytes(n_k, D, M_k, method, rank, size) / MB
                     for pool, n_k, D, M_k, method in zip(pools, local, sizes.dims, sizes.n_sparse, methods)),
                    default=0.0)
    chunked = [name == "soap" for name in sizes.names] if sizes.names else None
    grads = max((gradient_bytes(sizes.n_atoms[i], sizes.desc[:, i], sizes.grad[:, i], sizes.dims, sizes.n_sparse,
                                chunked) for i in which), default=0.0) / MB
    rows = sizes.n_rows[which].sum()
    largest = sizes.n_rows[which].max(initial=0)
    height = min(rows, max(block_rows or rows, largest))
    block = height * n * 8 / MB
    folding = fold_bytes(solver, n, size, height, rank) / MB
    solving = solve_bytes(solver, n, size, rank) + 8.0 * height * n * (solver == "scalapack")  # G keeps room for h rows
    if solver != "scalapack" and rank == 0:  # K_MM's column panels: the kernel's copies of a model's points
        solving += PRIOR_COPIES * max((M_k * (D + 1) * 8 for M_k, D in zip(sizes.n_sparse, sizes.dims)), default=0)
    solving /= MB
    saving = checkpoint_bytes(solver, n, size, height, rank) / MB
    phases = {
        "descriptors": base + held + max(pools, default=0.0) + POOL_CHUNK_BYTES / MB + sparse,
        "sparse points": base + held + selecting + sparse,
        "covariance rows": base + held + sparse + block + folding + grads,
        "checkpoint": base + held + sparse + saving,
        "solve": base + held + sparse + solving,
    }
    phases["peak"] = max(phases.values())
    return phases


def planned_memory_per_rank(size, environ=None):
    """Bytes of memory per rank to plan ``size`` ranks for, by the rule the fit uses
    (:func:`pargap.memory_limit.limit_per_rank`): PARGAP_MEMORY_PER_RANK, else the tightest of the
    Slurm, cgroup and MemAvailable limits, the node shared by Slurm's tasks per node, else by all
    ``size`` ranks -> (bytes, source)."""
    from pargap.memory_limit import limit_per_rank, slurm_tasks_per_node

    return limit_per_rank(min(size, slurm_tasks_per_node(environ) or size), environ)


def planned_solver(sizes, solver="auto", memory_per_rank=None, size=1):
    """The solver the fit would use: ``solver`` unless "auto", then the fit's rule
    (:func:`pargap.linalg.solve.auto_solver`) for ``memory_per_rank`` bytes (default
    :func:`planned_memory_per_rank`)."""
    from pargap.linalg.solve import auto_solver

    if solver != "auto":
        return solver
    if memory_per_rank is None:
        memory_per_rank = planned_memory_per_rank(size)[0]
    return auto_solver(sum(sizes.n_sparse), memory_per_rank)[0]


@dataclass
class Plan:
    """The memory plan of a fit on ``size`` ranks: the solver and row block it would use, the
    partition and the estimate (dict of phase -> MB, and "peak") of every rank."""

    size: int
    solver: str
    row_block_mb: float
    block_rows: int
    memory_per_rank: float
    memory_source: str
    parts: list
    estimates: list

    @property
    def peak(self):
        return max(e["peak"] for e in self.estimates)


def make_plan(sizes, size, solver="auto", row_block_mb=None, memory_per_rank=None):
    """The :class:`Plan` of the fit of ``sizes`` on ``size`` ranks: the structures partitioned as
    the fit does (by neighbour-pair cost, one pass for all ranks), the solver and the row block
    chosen by the fit's rules for ``memory_per_rank`` bytes (default :func:`planned_memory_per_rank`)."""
    from pargap.fitting.rows import default_row_block_mb
    from pargap.parallel import partitions

    source = "given"
    if memory_per_rank is None:
        memory_per_rank, source = planned_memory_per_rank(size)
    parts = partitions(sizes.n_atoms.astype(int).tolist(), size, sizes.cost.tolist() if size > 1 else None)
    solver = planned_solver(sizes, solver, memory_per_rank, size)
    M = sum(sizes.n_sparse)
    mb = row_block_mb if row_block_mb is not None else default_row_block_mb(memory_per_rank, M + 1)
    block_rows = max(1, int(mb * MB // (8 * (M + 1))))
    estimates = [estimate(sizes, p.structures, p.rank, size, solver, block_rows) for p in parts]
    return Plan(size, solver, mb, block_rows, memory_per_rank, source, parts, estimates)


def plan(sizes, size, solver="auto", row_block_mb=None, memory_per_rank=None):
    """(Partition per rank, estimate per rank) of :func:`make_plan`."""
    p = make_plan(sizes, size, solver, row_block_mb, memory_per_rank)
    return p.parts, p.estimates


COLUMNS = (("descriptors", "descriptors"), ("sparse pts", "sparse points"), ("cov. rows", "covariance rows"),
           ("checkpoint", "checkpoint"), ("solve", "solve"), ("peak", "peak"))


def report(sizes, size, stream=None, solver="auto", row_block_mb=None, memory_per_rank=None):
    """The --dry-run table: per rank, the rows and the estimated peak MB of each phase; returns the
    :class:`Plan`."""
    import sys

    stream = stream or sys.stdout
    p = make_plan(sizes, size, solver, row_block_mb, memory_per_rank)
    M = sum(sizes.n_sparse)
    n = len(sizes.n_atoms)
    print(f"[pargap] dry run: {n} structures, {int(sizes.n_atoms.sum())} atoms, {int(sizes.n_rows.sum())} rows "
          f"x {M} sparse points ({', '.join(f'{nm} {m}' for nm, m in zip(sizes.names, sizes.n_sparse))}); "
          f"{sizes.sampled} structures measured, the rest scaled by atom count", file=stream)
    budget = "unknown" if not np.isfinite(p.memory_per_rank) else f"{p.memory_per_rank / MB:.0f} MB"
    print(f"[pargap] memory per rank {budget} ({p.memory_source}; PARGAP_MEMORY_PER_RANK sets it for "
          f"other nodes): solver {p.solver}" + (" (auto)" if solver == "auto" else "")
          + f", row blocks of at most {p.block_rows} rows (row_block_mb = {p.row_block_mb:.1f})", file=stream)
    print(f"[pargap] estimated peak memory per rank (MB) on {size} rank(s), "
          f"cost imbalance {100 * p.parts[0].imbalance:.1f}%", file=stream)
    print(f"{'rank':>6s} {'structures':>10s} {'rows':>10s} " + " ".join(f"{h:>11s}" for h, _ in COLUMNS),
          file=stream)
    peaks = [e["peak"] for e in p.estimates]
    shown = range(size) if size <= 16 else sorted({0, 1, size - 1, int(np.argmax(peaks))})
    for r in shown:
        e = p.estimates[r]
        which = list(p.parts[r].structures)
        print(f"{r:6d} {len(which):10d} {int(sizes.n_rows[which].sum()):10d} "
              + " ".join(f"{e[key]:11.1f}" for _, key in COLUMNS), file=stream)
    print(f"[pargap] largest estimated peak per rank: {p.peak:.0f} MB; ask the batch system for about "
          f"{memory_request(p.peak)} per rank (with --set solver={p.solver} --set row_block_mb={p.row_block_mb:.1f}, "
          "as planned)", file=stream)
    return p


def memory_request(peak_mb, margin=1.2):
    """A per-rank memory request with a margin, rounded up to 100 MB, as Slurm/PBS want it ("1200M")."""
    return f"{int(np.ceil(peak_mb * margin / 100.0) * 100)}M"
