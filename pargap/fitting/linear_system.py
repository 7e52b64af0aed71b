"""gap_fit's linear_system_dump_file, as one HDF5 file: the least-squares problem of the fit.

    alpha = argmin || A alpha - b ||^2 + alpha^T K_MM alpha,   A = Lambda^(-1/2) K_NM,  b = Lambda^(-1/2) y

Datasets: ``A`` (N, M) and ``b`` (N,), the rows of all ranks in rank order (each rank's rows in
the order of its structures); ``K_MM`` (M, M), block-diagonal over the models, sparse_jitter
included on the diagonal; ``row_structure`` (N,), the 0-based index in the training file of
each row's structure. After a restart only the rows of the structures not in the checkpoint
are written (the checkpoint holds their factor, not their rows). Attributes: M, N,
sparse_jitter, and the number of sparse points of each model (``n_sparse``). gap_fit writes
K_MN, Lambda, y and K_MM as raw binary files named by this prefix instead.
"""

import os

import numpy as np

from pargap.errors import PargapError
from pargap.fitting.checkpoint import ROW_CHUNK, open_collective
from pargap.parallel import collective, on_root


def dump_linear_system(comm, path, structures, models, e0, settings, core=None):
    """Write ``path`` (collectively; atomically: a temporary name, then renamed by rank 0).

    structures: this rank's structures, whose rows [A | b] are built again here and held whole
    (a debugging aid: the fit itself streams them); models: the fit's models (for K_MM); e0 and
    settings (FitSettings) and the baseline potential ``core`` as in the fit."""
    import scipy.linalg

    from pargap.fitting.rows import covariance_rows

    block = collective(comm, covariance_rows, structures, models, e0, settings.at_file, settings.hessian_delta,
                       core, local_property0=settings.local_property0)
    jitter = settings.sparse_jitter
    counts = comm.allgather(block.shape[0])
    offset, M = sum(counts[: comm.Get_rank()]), block.shape[1] - 1
    owner = np.repeat([s.index for s in structures], [s.n_rows for s in structures]).astype(np.int64)
    K_mm = on_root(comm, lambda: scipy.linalg.block_diag(*[m.covariance_sparse(jitter) for m in models]))
    tmp = f"{path}.tmp"

    def write():
        try:
            with open_collective(comm, tmp, "w") as f:
                A = f.create_dataset("A", (sum(counts), M), dtype="f8")
                b = f.create_dataset("b", (sum(counts),), dtype="f8")
                rows = f.create_dataset("row_structure", (sum(counts),), dtype="i8")
                K = f.create_dataset("K_MM", (M, M), dtype="f8")
                f.attrs.update(M=M, N=sum(counts), sparse_jitter=float(jitter),
                               n_sparse=np.array([m.n_sparse for m in models], dtype=np.int64))
                for start in range(0, block.shape[0], ROW_CHUNK):
                    stop = min(start + ROW_CHUNK, block.shape[0])
                    A[offset + start:offset + stop] = np.ascontiguousarray(block[start:stop, :M])
                    b[offset + start:offset + stop] = block[start:stop, M]
                    rows[offset + start:offset + stop] = owner[start:stop]
                if comm.Get_rank() == 0:
                    K[...] = K_mm
        except OSError as exc:
            raise PargapError(f"linear_system_dump_file: cannot write {path}: {exc}") from None

    collective(comm, write)
    on_root(comm, os.replace, tmp, path)
