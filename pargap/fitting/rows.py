"""Phase covariance rows, streamed: each rank builds the rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y]
of a bounded block of its structures, folds them into the factor, and reuses the block:

    for each round (the same number on every rank; a rank out of structures folds zero rows):
        block <- the rows of this rank's next structures, at most row_block_mb
        factor.fold(block)                    (collective)
        a stop request on any rank?  -> stop after this round

Memory per rank: one block plus the factor (O(M^2) for TSQR, O(M^2 / P) for ScaLAPACK),
independent of the number of structures N. The factor does not depend on how the rows are cut
into blocks, so the coefficients are the same, to rounding, for any block size and any P.
All row assembly is here: a structure's rows (:func:`structure_rows`), a rank's rows held whole
(:func:`covariance_rows`, for the likelihood), the streamed rounds (:func:`fold_rows`).
"""

import time

import numpy as np

from pargap.baselines.core_potential import core_targets
from pargap.data.local_property import local_property_rows, property_offsets
from pargap.errors import InputError
from pargap.gp.observations import VIRIAL_COMPONENTS, hessian_row, single_model_rows
from pargap.parallel import collective_flag

MB = 2**20
ROW_BLOCK_ROWS = 2048
"""By default a row block holds this many rows (16 of tpqrt's 128-row panels: enough for BLAS-3
speed; more rows fold no faster) ..."""
ROW_BLOCK_FRACTION = 0.05
"""... but takes at most this fraction of the memory per rank ..."""
ROW_BLOCK_MIN_MB = 4.0
"""... and at least this much (and always one structure's rows)."""


def default_row_block_mb(memory_per_rank, n_columns):
    """row_block_mb when unset: ROW_BLOCK_ROWS rows of ``n_columns`` float64, at most
    ROW_BLOCK_FRACTION of the memory per rank (bytes), at least ROW_BLOCK_MIN_MB."""
    return float(max(ROW_BLOCK_MIN_MB, min(ROW_BLOCK_ROWS * n_columns * 8 / MB, ROW_BLOCK_FRACTION * memory_per_rank / MB)))


def n_rows(structure):
    """Rows of a structure in the energy models' least-squares system."""
    return structure.n_rows


def row_block_rows(comm, settings, structures, n_columns, count=n_rows):
    """Rows per block on this rank: settings.row_block_mb, or by default
    :func:`default_row_block_mb` of the memory per rank (collective)."""
    from pargap.linalg.solve import memory_per_rank

    chosen = settings.row_block_mb is not None
    mb = settings.row_block_mb if chosen else default_row_block_mb(memory_per_rank(comm), n_columns)
    return block_rows(structures, n_columns, mb, settings.at_file, chosen, count)


def block_rows(structures, n_columns, row_block_mb, file=None, chosen=True, count=n_rows):
    """Rows per block for blocks of ``row_block_mb`` MB of float64 rows with ``n_columns``
    columns. A structure whose rows alone (``count(structure)``) are more is an InputError naming
    it and the size it needs when the block size was set (``chosen``); a default block grows to
    hold it."""
    rows = max(1, int(row_block_mb * MB // (8 * n_columns)))
    largest = max(structures, key=count, default=None)
    if largest is not None and count(largest) > rows:
        if not chosen:
            return count(largest)
        need = count(largest) * n_columns * 8 / MB
        raise InputError(f"its {count(largest)} rows x {n_columns} columns take {need:.2f} MB, more than one "
                         f"row block (row_block_mb = {row_block_mb:g}): set row_block_mb to at least "
                         f"{np.ceil(need * 100) / 100:.2f}", file=file, structure=largest.index, key="row_block_mb")
    return rows


def row_blocks(structures, rows_per_block, count=n_rows):
    """Consecutive groups of ``structures`` with at most ``rows_per_block`` rows each."""
    blocks, current, n = [], [], 0
    for s in structures:
        if current and n + count(s) > rows_per_block:
            blocks.append(current)
            current, n = [], 0
        current.append(s)
        n += count(s)
    if current:
        blocks.append(current)
    return blocks


PROGRESS_SECONDS = 60.0
"""fold_rows reports progress at most this often (and at every tenth of the rounds)."""


def fold_rows(comm, factor, structures, build, rows_per_block, stop=None, count=n_rows, log=None):
    """Build the rows of this rank's ``structures`` block by block and fold them into ``factor``.

    build(structure, out) writes the structure's rows into ``out`` (count(structure), n_columns).
    Every rank runs the same rounds (the most blocks any rank has); an error on one rank is
    raised on all of them before the fold. A rank that got a stop request (``stop.received``)
    stops after its current structure; the ranks agree at the end of each round and stop there,
    the rows built so far folded in. ``log``: progress lines (rounds done, elapsed, estimated
    time left) go there. Returns (file indices of the structures folded in, stopped, CPU seconds
    building rows, seconds folding)."""
    blocks = row_blocks(structures, rows_per_block, count)
    n_rounds = max(comm.allgather(len(blocks)))
    height = max((sum(count(s) for s in b) for b in blocks), default=0)
    memory = np.empty(height * factor.n_columns)  # one block, reused every round
    done, stopped, building, folding = [], False, 0.0, 0.0
    started = last = time.monotonic()
    for k in range(n_rounds):
        group = blocks[k] if k < len(blocks) else []
        # Fortran-ordered and contiguous: LAPACK folds it in place, with no copy
        buffer = memory[:sum(count(s) for s in group) * factor.n_columns].reshape((-1, factor.n_columns), order="F")

        def build_block():
            n = 0
            for s in group:
                if stop is not None and stop.received:
                    break
                build(s, buffer[n:n + count(s)])
                n += count(s)
                done.append(s.index)
                if stop is not None:
                    stop.done(len(done))
            return n

        begin = time.process_time()  # CPU time: fair under oversubscription too
        n, stopped = collective_flag(comm, lambda: stop is not None and stop.received, build_block)
        middle = time.process_time()
        factor.fold(buffer[:n])
        building, folding = building + middle - begin, folding + time.process_time() - middle
        if stopped:
            break
        now = time.monotonic()
        if log is not None and k + 1 < n_rounds and (now - last > PROGRESS_SECONDS
                                                      or (k + 1) * 10 // n_rounds > k * 10 // n_rounds):
            last = now
            log(f"rows: round {k + 1} of {n_rounds} ({100 * (k + 1) / n_rounds:.0f}%), {now - started:.0f} s, "
                f"about {(now - started) * (n_rounds - k - 1) / (k + 1):.0f} s left")
    return done, stopped, building, folding


def structure_rows(s, models, e0, out, file=None, hessian_delta=0.01, core=None, local_property0=None):
    """Write the rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y] of one structure into ``out``
    (s.n_rows, M+1), model by model into its columns, so that no copy of the structure's force
    rows (3 n_atoms, M) is made beyond one model's (n_atoms, 3, M_k).

    Rows in order: energy E - sum e0 (eV); forces F (eV/A), atom by atom, x y z; the 6 independent
    virial components W_kl (eV); Hessian eigenvalues (eV/A^2) by central differences of force rows
    with displacement hessian_delta; all targets minus the baseline potential ``core``. A
    structure with local properties has their rows first, minus local_property0
    (pargap.data.local_property)."""
    gradients = s.forces is not None or s.virial is not None
    n_local = 0 if s.local_property is None else s.local_property.n_rows
    energy, forces, virial, hessian = core_targets(core, s, hessian_delta)
    M = out.shape[1] - 1
    n_atoms = s.n_atoms
    start = 0
    for m in models:
        cols = slice(start, start + m.n_sparse)
        rows = single_model_rows(s.atoms, m, gradients)
        if n_local:  # per-atom targets: the local rows of the fitted atoms
            out[:n_local, cols] = local_property_rows(rows.local, s.local_property, np.zeros(n_atoms))[0]
        row = n_local
        if s.energy is not None:
            out[row, cols] = rows.energy / s.sigma_energy
            row += 1
        if s.forces is not None:
            for c in range(3):  # row 3a + c is atom a, direction c
                np.divide(rows.forces[:, c, :], s.sigma_forces[:, c, None],
                          out=out[row + c:row + 3 * n_atoms:3, cols])
            row += 3 * n_atoms
        if s.virial is not None:
            for k, l in VIRIAL_COMPONENTS:
                out[row, cols] = rows.virial[k, l] / s.sigma_virial[k, l]
                row += 1
        del rows
        start += m.n_sparse
    if n_local:
        out[:n_local, M] = local_property_rows(np.zeros((n_atoms, 0)), s.local_property,
                                               property_offsets(s.atoms.numbers, local_property0))[1]
    row = n_local
    if s.energy is not None:
        out[row, M] = (energy - sum(e0[int(z)] for z in s.atoms.numbers)) / s.sigma_energy
        row += 1
    if s.forces is not None:
        out[row:row + 3 * n_atoms, M] = (forces / s.sigma_forces).ravel()
        row += 3 * n_atoms
    if s.virial is not None:
        for k, l in VIRIAL_COMPONENTS:
            out[row, M] = virial[k, l] / s.sigma_virial[k, l]
            row += 1
    for eigenvalue, eigenvector in hessian:
        out[row, :M] = hessian_row(s.atoms, models, eigenvector, hessian_delta) / s.sigma_hessian
        out[row, M] = eigenvalue / s.sigma_hessian
        row += 1
    if not np.all(np.isfinite(out)):
        raise InputError("its covariance rows are not finite (atoms on top of each other?)", file=file,
                         structure=s.index)


def empty_rows(structures, models):
    """An uninitialised Fortran-ordered rows block (n_p, M+1) for ``structures`` and ``models``."""
    return np.empty((sum(s.n_rows for s in structures), sum(m.n_sparse for m in models) + 1), order="F")


def covariance_rows(structures, models, e0, file=None, hessian_delta=0.01, core=None, out=None,
                    local_property0=None):
    """This rank's rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y], (n_p, M+1), all held, Fortran-ordered
    (written into ``out``, a view of that shape, if given): the structures one after the other,
    each by :func:`structure_rows`. core: the baseline potential subtracted from the targets;
    local_property0: the offsets of local properties."""
    block = empty_rows(structures, models) if out is None else out
    row = 0
    for s in structures:
        structure_rows(s, models, e0, block[row:row + s.n_rows], file, hessian_delta, core, local_property0)
        row += s.n_rows
    return block
