"""Phase covariance rows: this rank's block [Lambda^(-1/2) K_NM | Lambda^(-1/2) y], built
structure by structure in rounds, between which the ranks agree on a stop request."""

import time

import numpy as np

from pargap.baselines.core_potential import core_targets
from pargap.errors import InputError
from pargap.gp.observations import VIRIAL_COMPONENTS, hessian_row, model_rows
from pargap.parallel import collective_flag


def empty_rows(structures, models):
    """An uninitialised Fortran-ordered rows block (n_p, M+1) for ``structures`` and ``models``."""
    return np.empty((sum(s.n_rows for s in structures), sum(m.n_sparse for m in models) + 1), order="F")


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


ROW_ROUNDS = 16
"""The rows are built in at most this many rounds (groups of structures of about equal rows on
each rank). A rank that got a stop request (SIGTERM) stops after its current structure; the
ranks agree at the end of each round (few rounds: each is a synchronisation point)."""


def row_groups(structures, n_groups):
    """Consecutive groups of ``structures``, ``n_groups`` of them (some maybe empty), of about
    equal row counts."""
    rows = np.cumsum([s.n_rows for s in structures])
    total = rows[-1] if len(rows) else 0
    cuts = np.searchsorted(rows, total * np.arange(1, n_groups) / n_groups, side="right")
    bounds = [0, *cuts.tolist(), len(structures)]
    return [structures[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


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
