"""Checkpoint and restart: the rows of [Lambda^-1/2 K_NM | Lambda^-1/2 y] and what defines them.

    DIR/models.h5   the models (descriptors, kernels, sparse points), e0 and the settings as run,
                    in the potential file format (alpha = 0), written by rank 0
    DIR/rows.h5     dataset ``rows`` (N, M+1): every rank writes its own rows at its offset, with
                    parallel HDF5 (driver mpio) under MPI

A restart reads both, gives each rank a contiguous share of the rows (any number of ranks) and
goes straight to the solve: the coefficients equal the uninterrupted fit's to rounding. Both files
are written under temporary names and renamed, so an interrupted checkpoint leaves the last
complete one in place.
"""

import os
from pathlib import Path

import numpy as np

from pargap.errors import CollectiveError, InputError, PargapError
from pargap.parallel import collective, on_root
from pargap.potential import Potential

ROW_CHUNK = 4096


def _open(comm, path, mode):
    import h5py

    if comm.Get_size() > 1 and h5py.get_config().mpi:
        return h5py.File(path, mode, driver="mpio", comm=comm)
    if comm.Get_size() > 1 and mode != "r":
        raise CollectiveError("checkpoints under MPI need h5py built with MPI (parallel HDF5)")
    return h5py.File(path, mode)


def save(comm, folder, models, e0, settings_toml, seed, block):
    """Write the checkpoint of a fit whose rows are this rank's ``block`` (n_p, M+1)."""
    folder = Path(folder)
    zero = [type(m)(m.descriptor, m.kernel, m.sparse_x, m.sparse_weight, np.zeros(m.n_sparse), m.gap_index)
            for m in models]

    def save_models():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            Potential(zero, e0, settings_toml, {"rnd_seed": seed}).save(folder / "models.h5")
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
                for start in range(0, block.shape[0], ROW_CHUNK):
                    stop = min(start + ROW_CHUNK, block.shape[0])
                    rows[offset + start:offset + stop] = np.ascontiguousarray(block[start:stop])
        except OSError as exc:
            raise PargapError(f"cannot write the checkpoint {tmp}: {exc}") from None

    collective(comm, write)  # every rank has closed the file; a failure on one is raised on all
    on_root(comm, os.replace, tmp, folder / "rows.h5")


def load(comm, folder, settings):
    """(models, e0, seed, this rank's rows as a Fortran-ordered block) from a checkpoint, after
    checking that it was made with the same settings (FitSettings; gp_file may differ, and
    rnd_seed = -1 takes the checkpoint's seed)."""
    import dataclasses
    import tomllib

    folder = Path(folder)

    def read_state():
        for name in ("models.h5", "rows.h5"):
            if not (folder / name).exists():
                raise InputError("no checkpoint here (models.h5 and rows.h5 expected)", file=str(folder / name))
        return Potential.load(folder / "models.h5")

    state = collective(comm, read_state)
    seed = int(state.provenance.get("rnd_seed", -1))
    old = tomllib.loads(state.settings)
    new = tomllib.loads(dataclasses.replace(settings, rnd_seed=seed if settings.rnd_seed < 0 else settings.rnd_seed).to_toml())
    old.pop("gp_file", None)
    new.pop("gp_file", None)
    if old != new:
        differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise CollectiveError(f"the checkpoint in {folder} was made with other settings ({', '.join(differ)})")
    import h5py

    with h5py.File(folder / "rows.h5", "r") as f:
        rows = f["rows"]
        n, width = rows.shape
        rank, size = comm.Get_rank(), comm.Get_size()
        start, stop = rank * n // size, (rank + 1) * n // size
        block = np.empty((stop - start, width), order="F")
        for at in range(start, stop, ROW_CHUNK):
            block[at - start:min(at + ROW_CHUNK, stop) - start] = rows[at:min(at + ROW_CHUNK, stop)]
    return state.models, state.e0, seed, block
