"""Under mpirun: the streamed factor against scipy's lstsq on the gathered problem.

    mpirun -n P python factor_oracle.py SOLVER [CHUNK]

Rows are dealt unevenly (rank r holds 29 r + 3 rows, the last rank none when P > 2) and folded
in blocks of 1, 5 and 64 rows, ranks with fewer blocks folding empty ones, so every rank calls
fold the same number of times. Checked, for each block size: alpha equals lstsq's and is the
same on every rank; the condition estimate equals the one-process one; a second solve gives the
same alpha and rows folded after a solve count (the factor keeps the data's R); a checkpointed
triangle restored on fewer ranks (a sub-communicator), with the remaining rows folded there,
gives the same alpha. CHUNK: entries per message of a packed triangle (small, to cut it up).
Prints one line per check on rank 0; exits non-zero on every rank if any check fails."""

import sys

import numpy as np
import scipy.linalg

from pargap.linalg import tsqr
from pargap.linalg.factor import RowFactor
from pargap.parallel import SerialComm, world

comm = world()
rank, size = comm.Get_rank(), comm.Get_size()
solver = sys.argv[1]
if len(sys.argv) > 2:
    tsqr.CHUNK = int(sys.argv[2])
failures = []


def check(name, ok, detail=""):
    if rank == 0:
        print(f"ranks {size} {solver}: {name}: {detail} {'ok' if ok else 'FAILED'}", flush=True)
    if not ok:
        failures.append(name)


def relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


rng = np.random.default_rng(7)
M = 23  # not a multiple of ScaLAPACK's block size below
sizes = [29 * r + 3 for r in range(size)]
if size > 2:
    sizes[-1] = 0
N = sum(sizes)
rows = rng.normal(size=(N, M + 1))  # [A | b]
B = rng.normal(size=(M, M))
K_mm = B @ B.T / M + np.eye(M)
U = scipy.linalg.cholesky(K_mm)


def prior(r, c):
    return K_mm[np.ix_(r, c)]


def lstsq(stop):
    return scipy.linalg.lstsq(np.vstack([rows[:stop, :M], U]), np.concatenate([rows[:stop, M], np.zeros(M)]))[0]


def fold_mine(factor, mine, block, comm):
    """Fold rows ``mine`` in blocks of ``block`` rows; every rank of comm folds as often."""
    folds = comm.allreduce(-(-len(mine) // block), op=max_op())
    for k in range(folds):
        factor.fold(mine[k * block:(k + 1) * block].copy(order="F"))  # fold overwrites its rows


def max_op():
    from mpi4py import MPI

    return MPI.MAX if size > 1 else None


reference = lstsq(N)
serial = RowFactor.create(SerialComm(), M + 1, "tsqr")
serial.fold(rows.copy(order="F"))
reference_condition = serial.solve(prior).condition
start = sum(sizes[:rank])
mine = rows[start:start + sizes[rank]]
options = {"block_size": 8} if solver == "scalapack" else {}
for block in (1, 5, 64):
    with RowFactor.create(comm, M + 1, solver, **options) as factor:
        fold_mine(factor, mine, block, comm)
        solution = factor.solve(prior)
        error = relative(solution.alpha, reference)
        check(f"block {block}: alpha equals lstsq", error < 1e-10, f"relative difference {error:.1e}")
        same = comm.allgather(solution.alpha.tobytes())
        check(f"block {block}: same alpha on every rank", all(s == same[0] for s in same))
        check(f"block {block}: condition equals one process's",
              abs(solution.condition / reference_condition - 1) < 1e-6,
              f"{solution.condition:.6e} vs {reference_condition:.6e}")
        again = factor.solve(prior)
        check(f"block {block}: a second solve gives the same alpha", relative(again.alpha, solution.alpha) < 1e-13)

# rows after a solve, and a checkpoint restored on fewer ranks with the rest of the rows folded there
half = [n // 2 for n in sizes]
first = mine[:half[rank]]
with RowFactor.create(comm, M + 1, solver, **options) as factor:
    fold_mine(factor, first, 7, comm)
    factor.solve(prior)
    state = factor.checkpoint_state()
    check("checkpoint rows in range", 0 <= state.offset <= state.n_rows == M + 1
          and state.offset + len(state.rows) <= M + 1 and state.rows.shape[1] == M + 1)
    # the saved triangle, as the checkpoint would write it (rows at their offsets)
    saved = np.zeros((M + 1, M + 1))
    for offset, part in comm.allgather((state.offset, state.rows.copy())):
        saved[offset:offset + len(part)] = part
    check("checkpoint is one upper triangle", np.array_equal(saved, np.triu(saved)))
    factor.fold(mine[half[rank]:].copy(order="F"))  # the rest, folded after the checkpoint
    error = relative(factor.solve(prior).alpha, reference)
    check("rows folded after a solve and a checkpoint count", error < 1e-10, f"relative difference {error:.1e}")
rest = np.vstack([rows[sum(sizes[:r]) + half[r]:sum(sizes[:r + 1])] for r in range(size)])
fewer = max(1, size // 2)
sub = comm.Split(int(rank < fewer), rank) if size > 1 else comm
if rank < fewer:
    sub_comm = SerialComm() if fewer == 1 else sub
    restored = RowFactor.restore(sub_comm, M + 1, solver, saved, **options)
    lo, hi = rank * len(rest) // fewer, (rank + 1) * len(rest) // fewer
    restored.fold(rest[lo:hi].copy(order="F"))
    got = restored.solve(prior).alpha
    restored.close()
    error = relative(got, reference)
else:
    error = 0.0
error = comm.allreduce(error, op=max_op())
check(f"restored on {fewer} rank(s), the rest folded there: alpha equals lstsq", error < 1e-10,
      f"relative difference {error:.1e}")
if size > 1:
    sub.Free()

ok = comm.allreduce(int(not failures))
sys.exit(0 if ok == size else 1)
