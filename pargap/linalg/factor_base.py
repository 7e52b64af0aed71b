"""What every streamed QR factor shares (:mod:`pargap.linalg.factor`, :mod:`pargap.linalg.scalapack_factor`):
the checkpoint slab, the rows each rank reads back, and the collective close."""

from dataclasses import dataclass

import numpy as np


@dataclass
class FactorState:
    """This rank's part of a checkpointed triangle: rows [offset, offset + len(rows)) of the global
    (n_rows, n_columns) upper triangle (zeros left of the diagonal); ``rows`` may be empty."""

    offset: int
    rows: np.ndarray  # (k, n_columns)
    n_rows: int


def share(n, rank, size):
    """Rows [start, stop) of an n-row range held by ``rank`` of ``size`` (nearly equal slabs)."""
    return rank * n // size, (rank + 1) * n // size


class FactorBase:
    """fold(rows), checkpoint_state(), solve(prior), bytes_per_rank(), close(); a context manager."""

    solver = None

    def close(self):
        """Free what the factor holds across ranks (collective; only ScaLAPACK's grids need it)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
