"""Checkpoint and restart: the rows of [Lambda^-1/2 K_NM | Lambda^-1/2 y] and what defines them.

    DIR/models.h5   the models (descriptors, kernels, sparse points), e0 and the settings as run,
                    in the potential file format (alpha = 0), written by rank 0
    DIR/rows.h5     dataset ``rows`` (N_done, M+1): every rank writes its own rows at its offset,
                    with parallel HDF5 (driver mpio) under MPI; dataset ``structures``: the
                    structures (file indices) those rows cover; attribute ``n_structures``

A restart reads both, gives each rank a contiguous share of the rows (any number of ranks),
builds the rows of the structures not covered (none after a complete checkpoint) and solves:
the coefficients equal the uninterrupted fit's to rounding. Both files are written under
temporary names and renamed, so an interrupted checkpoint leaves the last complete one in place.

SIGTERM (a batch system's wall-time warning) is caught by :class:`StopSignal`: it only sets a
flag. A rank building rows stops after its current structure, and the ranks agree at safe points:
the end of each round of rows (at most 16, pargap.fitting.rows.ROW_ROUNDS), between the phases before
them, and just before the solve (a signal during the solve is not acted on). Then the fit saves
what is done (the models, and the rows finished so far with the structures they cover) and every
rank exits with EXIT_STOPPED = 75 (EX_TEMPFAIL: "try again"); ``--restart DIR`` resumes.
``--stop-after SECONDS`` does the same once that time is up, for launchers that do not pass
SIGTERM on to the ranks (mpirun kills its ranks one second after its own SIGTERM). Without
``--checkpoint`` (or ``--restart``) the folder is ``<gp_file>.checkpoint``.
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

    def agreed(self):
        """True on every rank if any rank got the signal (one small allreduce)."""
        return self.comm.allreduce(int(self.received)) > 0

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _open(comm, path, mode):
    import h5py

    if comm.Get_size() > 1 and h5py.get_config().mpi:
        return h5py.File(path, mode, driver="mpio", comm=comm)
    if comm.Get_size() > 1 and mode != "r":
        raise CollectiveError("checkpoints under MPI need h5py built with MPI (parallel HDF5)")
    return h5py.File(path, mode)


def save(comm, folder, models, e0, settings_toml, seed, block, structures, n_structures, data_hash=None):
    """Write the checkpoint of a fit whose rows are this rank's ``block`` (n_p, M+1); the rows of
    all ranks cover ``structures`` (file indices, the same list on every rank) of the file's
    ``n_structures``; data_hash: the training file's SHA-256, checked on restart."""
    folder = Path(folder)
    zero = [type(m)(m.descriptor, m.kernel, m.sparse_x, m.sparse_weight, np.zeros(m.n_sparse), m.gap_index)
            for m in models]

    def save_models():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            provenance = {"rnd_seed": seed} | ({"at_file_sha256": data_hash} if data_hash else {})
            Potential(zero, e0, settings_toml, provenance).save(folder / "models.h5")
        except OSError as exc:
            raise PargapError(f"cannot write the checkpoint in {folder}: {exc}") from None

    on_root(comm, save_models)
    counts = comm.allgather(block.shape[0])
    offset = sum(counts[: comm.Get_rank()])
    tmp = folder / "rows.h5.tmp"

    def write():
        try:
            with _open(comm, tmp, "w") as f:
                rows = f.create_dataset("rows", (sum(counts), block.shape[1]), dtype="f8")
                covered = f.create_dataset("structures", (len(structures),), dtype="i8")
                f.attrs["n_structures"] = int(n_structures)
                if comm.Get_rank() == 0 and len(structures):
                    covered[:] = np.sort(np.asarray(structures, dtype=np.int64))
                for start in range(0, block.shape[0], ROW_CHUNK):
                    stop = min(start + ROW_CHUNK, block.shape[0])
                    rows[offset + start:offset + stop] = np.ascontiguousarray(block[start:stop])
        except OSError as exc:
            raise PargapError(f"cannot write the checkpoint {tmp}: {exc}") from None

    collective(comm, write)  # every rank has closed the file; a failure on one is raised on all
    on_root(comm, os.replace, tmp, folder / "rows.h5")


def load_state(comm, folder, settings):
    """(models, e0, seed, covered structures (sorted file indices), n_structures, saved rows) of a
    checkpoint, after checking that it was made with the same settings (FitSettings; gp_file may
    differ, and rnd_seed = -1 takes the checkpoint's seed)."""
    import dataclasses
    import tomllib

    folder = Path(folder)

    def read_state():
        for name in ("models.h5", "rows.h5"):
            if not (folder / name).exists():
                raise InputError("no checkpoint here (models.h5 and rows.h5 expected)", file=str(folder / name))
        import h5py

        with h5py.File(folder / "rows.h5", "r") as f:
            n_rows = f["rows"].shape[0]
            covered = f["structures"][()] if "structures" in f else None
            n_structures = int(f.attrs.get("n_structures", -1))
        return Potential.load(folder / "models.h5"), covered, n_structures, n_rows

    state, covered, n_structures, n_rows = collective(comm, read_state)
    seed = int(state.provenance.get("rnd_seed", -1))
    old = tomllib.loads(state.settings)
    new = tomllib.loads(dataclasses.replace(settings, rnd_seed=seed if settings.rnd_seed < 0 else settings.rnd_seed).to_toml())
    old.pop("gp_file", None)
    new.pop("gp_file", None)
    if old != new:
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CollectiveError(f"the checkpoint in {folder} was made with other settings ({', '.join(differ)})")
    if covered is None:  # written before partial checkpoints existed: always complete
        covered, n_structures = np.arange(max(n_structures, 0)), max(n_structures, 0)
    return state.models, state.e0, seed, covered, n_structures, n_rows


def load_rows(comm, folder, extra=0):
    """This rank's contiguous share of the saved rows, as a Fortran-ordered block with ``extra``
    more rows (uninitialised) below them for the rows still to build."""
    import h5py

    with h5py.File(Path(folder) / "rows.h5", "r") as f:
        rows = f["rows"]
        n, width = rows.shape
        rank, size = comm.Get_rank(), comm.Get_size()
        start, stop = rank * n // size, (rank + 1) * n // size
        block = np.empty((stop - start + extra, width), order="F")
        for at in range(start, stop, ROW_CHUNK):
            block[at - start:min(at + ROW_CHUNK, stop) - start] = rows[at:min(at + ROW_CHUNK, stop)]
    return block


def saved_data_hash(folder):
    """The SHA-256 of the training file a checkpoint was made from ("" for old checkpoints)."""
    import h5py

    with h5py.File(Path(folder) / "models.h5", "r") as f:
        value = f["provenance"].attrs.get("at_file_sha256", "")
    return value.decode() if isinstance(value, bytes) else str(value)
