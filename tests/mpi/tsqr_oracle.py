"""Under mpirun: the distributed TSQR solve against scipy's lstsq on the gathered problem.

Rows are dealt unevenly (rank r gets a block of 37 r + 3 rows, the last rank none when P > 2), so
uneven and empty blocks are covered. Exits non-zero on any rank if the solutions differ."""

import sys

import numpy as np
import scipy.linalg

from pargap.gp.model import cholesky_factor
from pargap.linalg.solve import tsqr_solve
from pargap.parallel import world

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
rng = np.random.default_rng(7)
M = 23
sizes = [37 * r + 3 for r in range(size)]
if size > 2:
    sizes[-1] = 0
A = rng.normal(size=(sum(sizes), M))
b = rng.normal(size=sum(sizes))
B = rng.normal(size=(M, M))
K_mm = B @ B.T + np.eye(M)
U = cholesky_factor(K_mm)
start = sum(sizes[:rank])
solution = tsqr_solve(comm, A[start:start + sizes[rank]], b[start:start + sizes[rank]], U)
reference = scipy.linalg.lstsq(np.vstack([A, U]), np.concatenate([b, np.zeros(M)]))[0]
error = np.max(np.abs(solution.alpha - reference)) / np.max(np.abs(reference))
ok = comm.allreduce(int(error < 1e-10))
if rank == 0:
    print(f"ranks {size}: relative difference {error:.2e}")
sys.exit(0 if ok == size else 1)
