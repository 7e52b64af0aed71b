"""Under mpirun: the ScaLAPACK solve against the serial reference (and scipy's lstsq) on the
gathered problem, with uneven row blocks (rank r gets 37 r + 3 rows, the last rank none when
P > 2), M not a multiple of the block size, and the condition estimate against the serial one.
An ill-conditioned problem must warn with the hint and give finite coefficients.

    mpirun -n P python scalapack_oracle.py [block_size]

Prints one line per check on rank 0; exits non-zero on every rank if any check fails."""

import sys
import warnings

import numpy as np
import scipy.linalg

from pargap.errors import PargapError
from pargap.gp.model import cholesky_factor
from pargap.linalg.solve import scalapack_solve, serial_solve
from pargap.parallel import world

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
block_size = int(sys.argv[1]) if len(sys.argv) > 1 else 8
failures = []


def check(name, ok, detail):
    if rank == 0:
        print(f"ranks {size}: {name}: {detail} {'ok' if ok else 'FAILED'}")
    if not ok:
        failures.append(name)


def rows_of(A, b, sizes):
    start = sum(sizes[:rank])
    return np.asfortranarray(np.column_stack([A, b])[start:start + sizes[rank]])


rng = np.random.default_rng(7)
M = 23  # not a multiple of the block size
sizes = [37 * r + 3 for r in range(size)]
if size > 2:
    sizes[-1] = 0
A = rng.normal(size=(sum(sizes), M))
b = rng.normal(size=sum(sizes))
B = rng.normal(size=(M, M))
K_mm = B @ B.T + np.eye(M)
U = cholesky_factor(K_mm)
block = rows_of(A, b, sizes)
solution = scalapack_solve(comm, block, lambda r, c: K_mm[np.ix_(r, c)], block_size=block_size)
reference = serial_solve(A, b, U)
error = np.max(np.abs(solution.alpha - reference.alpha)) / np.max(np.abs(reference.alpha))
check("alpha equals serial", error < 1e-10, f"relative difference {error:.2e}")
lstsq = scipy.linalg.lstsq(np.vstack([A, U]), np.concatenate([b, np.zeros(M)]))[0]
error = np.max(np.abs(solution.alpha - lstsq)) / np.max(np.abs(lstsq))
check("alpha equals lstsq", error < 1e-10, f"relative difference {error:.2e}")
check("residual", abs(solution.residual - reference.residual) < 1e-10 * reference.residual,
      f"{solution.residual:.12e} vs {reference.residual:.12e}")
check("condition equals serial", abs(solution.condition / reference.condition - 1) < 1e-6,
      f"{solution.condition:.6e} vs {reference.condition:.6e}")
same = comm.allgather(solution.alpha.tobytes())
check("same alpha on every rank", all(s == same[0] for s in same), "")

# ill-conditioned: two identical columns held apart by a tiny jitter
A2 = rng.normal(size=(sum(sizes), 6))
A2[:, 5] = A2[:, 4]
b2 = rng.normal(size=sum(sizes))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ill = scalapack_solve(comm, rows_of(A2, b2, sizes), lambda r, c: 1e-24 * (r[:, None] == c[None, :]),
                          block_size=block_size)
hinted = any("sparse_jitter" in str(w.message) and issubclass(w.category, RuntimeWarning) for w in caught)
check("ill-conditioned warns", hinted or rank != 0, f"condition {ill.condition:.2e}")
check("ill-conditioned finite", bool(np.all(np.isfinite(ill.alpha))), "")

# K_MM not positive definite: the same hint on every rank, no hang
try:
    scalapack_solve(comm, rows_of(A, b, sizes), lambda r, c: -1.0 * (r[:, None] == c[None, :]), block_size=block_size)
    raised = ""
except PargapError as exc:
    raised = str(exc)
check("not positive definite raises the hint", "sparse_jitter" in raised, "")

ok = comm.allreduce(int(not failures))
sys.exit(0 if ok == size else 1)
