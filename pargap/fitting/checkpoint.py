"""Checkpoint and restart: the factor of the rows folded in so far and what defines them.

    DIR/models.h5   the models (descriptors, kernels, sparse points), e0, the settings as run and
                    the fitted charge models, in the potential file format (energy alpha = 0),
                    written by rank 0
    DIR/factor.h5   dataset ``R`` (k, M+1), k <= M+1: the upper triangle R of the QR factorisation
                    of the rows [Lambda^(-1/2) K_NM | Lambda^(-1/2) y] folded in so far
                    (R^T R = A^T A over those rows; no prior rows), written with parallel HDF5
                    (driver mpio) under MPI, each rank its contiguous share; dataset ``structures``:
                    the structures (file indices) whose rows it holds; attribute ``n_structures``

Its size, 8 (M+1)^2 bytes at most, depends neither on the number of rows N nor on the ranks P.
A restart gives each rank a contiguous share of R's rows and folds them in like any other rows
(so any P), builds the rows of the structures not covered and solves: the coefficients equal the
uninterrupted fit's to rounding. Both files are written under temporary names and renamed, so an
interrupted checkpoint leaves the last complete one in place.

SIGTERM (a batch system's wall-time warning) is caught by :class:`StopSignal`: it only sets a
flag. A rank building rows stops after its current structure, and the ranks agree at safe points:
after each round of rows (one row block per rank), between the phases before them, after the
solve and after the write. Then the fit saves the factor of what is done and every rank exits
with EXIT_STOPPED = 75 (EX_TEMPFAIL: "try again"); ``--restart DIR`` resumes. ``--stop-after
SECONDS`` does the same once that time is up, for launchers that do not pass SIGTERM on to the
ranks (mpirun kills its ranks one second after its own SIGTERM). Without ``--checkpoint`` (or
``--restart``) the folder is ``<gp_file>.checkpoint``. :func:`check_folder` verifies, before any
work, that the folder can be written (and, on more than one rank, that h5py has parallel HDF5).
"""

import os
import signal
import time
from pathlib import Path

import numpy as np

from pargap.errors import CollectiveError, InputError, PargapError
from pargap.parallel import collective, on_root
from pargap.potential.potential import Potential

ROW_CHUNK = 4096
EXIT_STOPPED = 75
TEST_SIGNAL_AFTER = "PARGAP_TEST_SIGTERM_AFTER"
"""Test hook: a rank sends itself SIGTERM once it has built the rows of this many structures."""
TEST_SIGNAL_IN = "PARGAP_TEST_SIGTERM_IN"
"""Test hook: every rank sends itself SIGTERM when the named phase begins (e.g. "solve", "write")."""


class Stopped(Exception):
    """Raised on every rank alike once they agreed to stop; ``folder`` holds the checkpoint (or None)."""

    def __init__(self, message, folder=None):
        super().__init__(message)
        self.folder = folder


class StopSignal:
    """SIGTERM sets a flag (nothing else happens in the handler); :meth:`agreed` is the collective
    check at a safe point: every rank must call it the same number of times."""

    def __init__(self, comm, signals=(signal.SIGTERM,), after_seconds=None):
        self.comm = comm
        self.signalled = False
        self.deadline = None if after_seconds is None else time.monotonic() + after_seconds
        self.previous = {sig: signal.signal(sig, self._handler) for sig in signals}
        after = os.environ.get(TEST_SIGNAL_AFTER)
        self.signal_after = int(after) if after else None
        self.signal_in = os.environ.get(TEST_SIGNAL_IN)

    def _handler(self, signum, frame):
        self.signalled = True

    @property
    def received(self):
        """A signal came, or the time given (``after_seconds``, e.g. --stop-after) is up."""
        return self.signalled or (self.deadline is not None and time.monotonic() > self.deadline)

    def done(self, n_structures):
        """Called as structures are finished (the test hook counts them)."""
        if self.signal_after is not None and n_structures >= self.signal_after:
            self.signal_after = None
            os.kill(os.getpid(), signal.SIGTERM)

    def entering(self, phase):
        """Called as a phase begins (the test hook of TEST_SIGNAL_IN)."""
        if self.signal_in == phase:
            self.signal_in = None
            os.kill(os.getpid(), signal.SIGTERM)

    def agreed(self):
        """True on every rank if any rank got the signal (one small allreduce)."""
        return self.comm.allreduce(int(self.received)) > 0

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _parallel(comm):
    import h5py

    return comm.Get_size() > 1 and h5py.get_config().mpi


def open_collective(comm, path, mode):
    """An HDF5 file opened by every rank of ``comm`` (parallel HDF5 under MPI)."""
    import h5py

    if _parallel(comm):
        return h5py.File(path, mode, driver="mpio", comm=comm)
    if comm.Get_size() > 1 and mode != "r":
        raise CollectiveError(f"{path}: writing rows under MPI needs h5py built with MPI (parallel HDF5)")
    return h5py.File(path, mode)


def check_folder(comm, folder):
    """Before any work: the checkpoint ``folder`` can be made and written (its nearest existing
    ancestor is a writable folder), and on more than one rank h5py has parallel HDF5. Raised on
    every rank alike."""
    import h5py

    def writable():
        path = Path(folder).absolute()
        probe = path
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise PargapError(f"cannot write the checkpoint folder {folder}: {probe} is not a writable folder")

    on_root(comm, writable)
    if comm.Get_size() > 1 and not h5py.get_config().mpi:
        raise CollectiveError(f"checkpoints on {comm.Get_size()} ranks (folder {folder}) need h5py built with "
                              "MPI (parallel HDF5): run under mpirun with an MPI build of h5py")


def save(comm, folder, models, e0, settings_toml, seed, state, structures, n_structures, n_rows, data_hash=None,
         charge_models=(), charge_info=None, local_property=None):
    """Write the checkpoint of a fit whose rows so far (``n_rows`` of them) are folded into the
    factor whose ``checkpoint_state()`` is ``state`` (its offset, rows and n_rows); those rows
    cover ``structures`` (file indices, given on rank 0) of the file's ``n_structures``;
    data_hash: the training file's SHA-256, checked on restart; charge_models: the fitted charge
    models, if any, and charge_info their provenance entries; local_property: the key name of a
    local-property fit (:func:`saved_local_property`)."""
    folder = Path(folder)
    zero = [type(m)(m.descriptor, m.kernel, m.sparse_x, m.sparse_weight, np.zeros(m.n_sparse), m.gap_index)
            for m in models]

    def save_models():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            provenance = {"rnd_seed": seed} | ({"at_file_sha256": data_hash} if data_hash else {}) | (charge_info or {})
            Potential(zero, e0, settings_toml, provenance, charge_models=charge_models,
                      local_property=local_property).save(folder / "models.h5")
        except OSError as exc:
            raise PargapError(f"cannot write the checkpoint in {folder}: {exc}") from None

    on_root(comm, save_models)
    n_covered = comm.bcast(len(structures) if comm.Get_rank() == 0 else None, root=0)
    tmp = folder / "factor.h5.tmp"

    def write():
        try:
            with open_collective(comm, tmp, "w") as f:
                R = f.create_dataset("R", (state.n_rows, state.rows.shape[1]), dtype="f8")
                covered = f.create_dataset("structures", (n_covered,), dtype="i8")
                f.attrs["n_structures"] = int(n_structures)
                f.attrs["n_rows"] = int(n_rows)
                if comm.Get_rank() == 0 and n_covered:
                    covered[:] = np.sort(np.asarray(structures, dtype=np.int64))
                for start in range(0, len(state.rows), ROW_CHUNK):
                    stop = min(start + ROW_CHUNK, len(state.rows))
                    R[state.offset + start:state.offset + stop] = np.ascontiguousarray(state.rows[start:stop])
        except OSError as exc:
            raise PargapError(f"cannot write the checkpoint {tmp}: {exc}") from None

    collective(comm, write)  # every rank has closed the file; a failure on one is raised on all

    def publish():
        os.replace(tmp, folder / "factor.h5")
        if (folder / "rows.h5").exists():  # an older checkpoint's rows, now folded into R
            os.unlink(folder / "rows.h5")

    on_root(comm, publish)


def _factor_file(folder):
    """(path, dataset name) of a checkpoint's saved rows: factor.h5's triangle R, or the rows of a
    checkpoint written before factors were saved (rows.h5; its rows fold in just the same)."""
    folder = Path(folder)
    if (folder / "factor.h5").exists() or not (folder / "rows.h5").exists():
        return folder / "factor.h5", "R"
    return folder / "rows.h5", "rows"


def load_state(comm, folder, settings):
    """(models, e0, seed, covered structures (sorted file indices), n_structures, charge models,
    info: the saved provenance and n_rows, the rows folded in) of a checkpoint, after checking
    that it was made with the same settings (FitSettings; gp_file and row_block_mb may differ,
    and rnd_seed = -1 takes the checkpoint's seed)."""
    import dataclasses
    import tomllib

    folder = Path(folder)

    def read_state():
        path, name = _factor_file(folder)
        for needed in (folder / "models.h5", path):
            if not needed.exists():
                raise InputError("no checkpoint here (models.h5 and factor.h5 expected)", file=str(needed))
        import h5py

        with h5py.File(path, "r") as f:
            covered = f["structures"][()] if "structures" in f else None
            n_structures = int(f.attrs.get("n_structures", -1))
            n_rows = int(f.attrs.get("n_rows", f[name].shape[0] if name == "rows" else 0))
        return Potential.load(folder / "models.h5"), covered, n_structures, n_rows

    state, covered, n_structures, n_rows = collective(comm, read_state)
    seed = int(state.provenance.get("rnd_seed", -1))
    old = tomllib.loads(state.settings)
    new = tomllib.loads(dataclasses.replace(settings, rnd_seed=seed if settings.rnd_seed < 0 else settings.rnd_seed).to_toml())
    for key in ("gp_file", "row_block_mb"):  # neither changes the coefficients
        old.pop(key, None)
        new.pop(key, None)
    if old != new:
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CollectiveError(f"the checkpoint in {folder} was made with other settings ({', '.join(differ)})")
    if covered is None:  # written before partial checkpoints existed: always complete
        covered, n_structures = np.arange(max(n_structures, 0)), max(n_structures, 0)
    return state.models, state.e0, seed, covered, n_structures, state.charge_models, state.provenance | {"n_rows": n_rows}


def restore_factor(comm, folder, n_columns, solver):
    """The factor saved in ``folder``, restored on ``comm``'s ranks (any number) for ``solver``."""
    import h5py

    from pargap.linalg.factor import RowFactor

    path, name = _factor_file(folder)
    with h5py.File(path, "r") as f:
        saved = f[name]
        if saved.shape[1] != n_columns:
            raise CollectiveError(f"the checkpoint {path} has {saved.shape[1] - 1} sparse points, the models "
                                  f"{n_columns - 1}")
        return RowFactor.restore(comm, n_columns, solver, saved)


def saved_data_hash(folder):
    """The SHA-256 of the training file a checkpoint was made from ("" for old checkpoints)."""
    import h5py

    with h5py.File(Path(folder) / "models.h5", "r") as f:
        value = f["provenance"].attrs.get("at_file_sha256", "")
    return value.decode() if isinstance(value, bytes) else str(value)


def saved_local_property(folder):
    """The local property a checkpoint's fit was fitted to (its key name), or None for an energy fit."""
    import h5py

    with h5py.File(Path(folder) / "models.h5", "r") as f:
        value = f.attrs.get("local_property")
    return value.decode() if isinstance(value, bytes) else value
