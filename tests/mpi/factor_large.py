"""Under mpirun: the ScaLAPACK factor against the TSQR factor at a size where the 2-D grid has more
than one process column (P = 4: 2 x 2), M sparse points, 2 M rows in all, folded in blocks of 500 rows.

    mpirun -n 4 python factor_large.py M

Prints the grid and the relative difference of alpha (and of the condition estimates) on rank 0;
exits non-zero on every rank if they differ."""

import sys
import time

import numpy as np

from pargap.linalg import scalapack as sl
from pargap.linalg.factor import RowFactor
from pargap.parallel import world

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
M = int(sys.argv[1])
rng = np.random.default_rng(11)
X = rng.uniform(size=(M, 3))
K_mm = np.exp(-0.5 * np.sum((X[:, None] - X[None]) ** 2, axis=-1) / 0.3**2) + 1e-3 * np.eye(M)


def prior(r, c):
    return K_mm[np.ix_(r, c)]


mine = np.random.default_rng(100 + rank).normal(size=(2 * M // size, M + 1))
solutions = {}
for solver in ("tsqr", "scalapack"):
    start = time.perf_counter()
    with RowFactor.create(comm, M + 1, solver) as factor:
        for k in range(0, len(mine), 500):
            factor.fold(mine[k:k + 500].copy(order="F"))
        solutions[solver] = factor.solve(prior)
    seconds = time.perf_counter() - start
    if rank == 0:
        print(f"{solver}: {seconds:.1f} s, condition {solutions[solver].condition:.4e}", flush=True)
a, b = solutions["scalapack"], solutions["tsqr"]
error = float(np.max(np.abs(a.alpha - b.alpha)) / np.max(np.abs(b.alpha)))
condition = abs(a.condition / b.condition - 1)
ok = comm.allreduce(int(error < 1e-8 and condition < 1e-6))
if rank == 0:
    nprow, npcol = sl.grid_shape(size)
    print(f"ranks {size}, grid {nprow} x {npcol}, M {M}: alpha relative difference {error:.1e}, condition "
          f"{condition:.1e} {'ok' if ok == size else 'FAILED'}")
sys.exit(0 if ok == size else 1)
