"""The MPI edge: balanced partition of structures, collective error checks, a serial stand-in,
and array collectives whose message size per rank does not grow with the rank count P.

A partition is a pure function of the costs and the rank count, testable without MPI.
"""

import heapq
from dataclasses import dataclass

import numpy as np


from pargap.errors import CollectiveError, PargapError


@dataclass(frozen=True)
class Partition:
    """Structures (global indices, ascending) owned by ``rank`` of ``size``; ``loads`` per rank."""

    rank: int
    size: int
    structures: tuple
    loads: tuple

    @property
    def imbalance(self):
        """max load / mean load - 1 (0 is perfect)."""
        mean = sum(self.loads) / self.size
        return max(self.loads) / mean - 1.0 if mean > 0 else 0.0


def balanced_partition(costs, size):
    """Assign items of the given costs to ``size`` bins, largest first to the lightest bin (LPT).

    Deterministic: ties go to the lower rank. Returns a list of ``size`` sorted index lists."""
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    heap = [(0.0, r) for r in range(size)]
    owned = [[] for _ in range(size)]
    for i in order:
        load, r = heapq.heappop(heap)
        owned[r].append(i)
        heapq.heappush(heap, (load + costs[i], r))
    return [sorted(o) for o in owned]


def partition_structures(n_atoms, rank, size, costs=None):
    """``rank``'s part of :func:`partitions`."""
    return partitions(n_atoms, size, costs)[rank]


def partitions(n_atoms, size, costs=None):
    """Every rank's Partition of the structures by their row-building cost: ``costs`` per
    structure when known (e.g. neighbour pairs + atoms), else the row count 3 n_atoms + 7
    (forces, energy, virial). One partition for all ranks (the LPT pass runs once)."""
    costs = [3 * n + 7 for n in n_atoms] if costs is None else list(costs)
    owned = balanced_partition(costs, size)
    loads = tuple(sum(costs[i] for i in o) for o in owned)
    return [Partition(r, size, tuple(owned[r]), loads) for r in range(size)]


class SerialComm:
    """The few mpi4py communicator calls pargap uses, for one process without MPI."""

    rank = 0
    size = 1

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def gather(self, obj, root=0):
        return [obj]

    def allreduce(self, obj, op=None):
        return obj

    def Barrier(self):
        pass

    def Abort(self, code=1):
        raise SystemExit(code)


LAUNCHER_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")
"""Job-size variables MPI launchers set (Open MPI, PMI/MPICH/Intel MPI, Hydra, srun steps)."""


def world():
    """MPI.COMM_WORLD when started by an MPI launcher with more than one rank (mpirun, srun, ...),
    else a SerialComm, so that one rank runs without mpirun and without starting MPI.
    PARGAP_MPI=1 or 0 forces the choice."""
    import os

    forced = os.environ.get("PARGAP_MPI")
    if forced in ("0", "1"):
        use_mpi = forced == "1"
    else:
        use_mpi = any(os.environ.get(v, "1").isdigit() and int(os.environ.get(v, "1")) > 1 for v in LAUNCHER_SIZES)
    if not use_mpi:
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError:
        raise PargapError("started under an MPI launcher but mpi4py is not installed (pip install mpi4py)") from None
    return MPI.COMM_WORLD


def collective(comm, func, *args, **kwargs):
    """Run ``func`` on every rank; if it raises a PargapError on any rank, raise it on all ranks.

    Every rank reaches the same allgather whatever happens locally, so no rank is left waiting in
    a later collective. The error of the lowest failing rank is raised, naming that rank."""
    return collective_flag(comm, False, func, *args, **kwargs)[0]


def collective_flag(comm, flag, func, *args, **kwargs):
    """:func:`collective`, and whether ``flag`` (evaluated after ``func``: a callable or a value)
    is true on any rank, in the same single allgather -> (result, any flag)."""
    result, error = None, None
    try:
        result = func(*args, **kwargs)
    except PargapError as exc:
        error = str(exc)
    gathered = comm.allgather((error, bool(flag() if callable(flag) else flag)))
    for r, (e, _) in enumerate(gathered):
        if e is not None:
            prefix = f"rank {r}: " if comm.Get_size() > 1 else ""
            raise CollectiveError(prefix + e)
    return result, any(f for _, f in gathered)


def on_root(comm, func, *args, **kwargs):
    """Run ``func`` on rank 0 only and broadcast its result, or its PargapError, raised on all ranks."""
    result = None
    if comm.Get_rank() == 0:
        try:
            result = func(*args, **kwargs)
        except PargapError as exc:
            result = CollectiveError(str(exc))
    result = comm.bcast(result, root=0)
    if isinstance(result, CollectiveError):
        raise result
    return result


def gather_sorted(comm, items):
    """allgather lists of (key, ...) tuples and return them merged, sorted by key."""
    out = []
    for part in comm.allgather(items):
        out.extend(part)
    out.sort(key=lambda t: t[0])
    return out


# Array collectives: numpy buffers, no pickles; with one rank (SerialComm too) they return at once.


def _mpi():
    from mpi4py import MPI

    return MPI


def sum_in_place(comm, array):
    """array <- sum over ranks of array (in-place Allreduce; every rank passes the same shape)."""
    if comm.Get_size() > 1:
        MPI = _mpi()
        comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
    return array


def min_in_place(comm, array):
    """array <- elementwise minimum over ranks (in-place Allreduce)."""
    if comm.Get_size() > 1:
        MPI = _mpi()
        comm.Allreduce(MPI.IN_PLACE, array, op=MPI.MIN)
    return array


def total(comm, value):
    """Sum of a Python/numpy scalar over ranks."""
    if comm.Get_size() == 1:
        return value
    return comm.allreduce(value, op=_mpi().SUM)


def largest(comm, value):
    """Maximum of a scalar over ranks."""
    if comm.Get_size() == 1:
        return value
    return comm.allreduce(value, op=_mpi().MAX)


def smallest(comm, value):
    """Minimum of a scalar over ranks."""
    if comm.Get_size() == 1:
        return value
    return comm.allreduce(value, op=_mpi().MIN)


def broadcast(comm, array, root):
    """array (same shape and dtype on every rank) <- root's array (Bcast into the buffer)."""
    if comm.Get_size() > 1:
        comm.Bcast(np.ascontiguousarray(array) if root == comm.Get_rank() else array, root=root)
    return array


def gather_rows(comm, rows):
    """Every rank's rows (n_p, ...) stacked in rank order on every rank -> (sum n_p, ...).

    Allgatherv of the raw buffer, counted in rows of a contiguous datatype, so that no count
    reaches 2^31 however large the gathered array (no pickles)."""
    rows = np.ascontiguousarray(rows)
    if comm.Get_size() == 1:
        return rows.copy()
    MPI = _mpi()
    counts = np.array(comm.allgather(len(rows)), dtype=np.int64)
    out = np.empty((int(counts.sum()),) + rows.shape[1:], dtype=rows.dtype)
    width = int(np.prod(rows.shape[1:], dtype=np.int64))
    if out.size == 0:
        return out
    row = MPI.BYTE.Create_contiguous(width * rows.dtype.itemsize).Commit()
    try:
        comm.Allgatherv([rows, len(rows), row], [out, (counts, _starts(counts)), row])
    finally:
        row.Free()
    return out


def exchange_rows(comm, parts):
    """All-to-all of rows: parts[r] (n_r, W) float64 goes to rank r; returns the rows received
    from every rank, stacked in rank order (sum over sources, W). W is the same on every rank."""
    if comm.Get_size() == 1:
        return np.array(parts[0], dtype=float).copy()
    MPI = _mpi()
    width = parts[0].shape[1]
    send = np.ascontiguousarray(np.concatenate(parts), dtype=float)
    send_counts = np.array([len(p) for p in parts], dtype=np.int64)
    recv_counts = np.empty_like(send_counts)
    comm.Alltoall(send_counts, recv_counts)
    out = np.empty((int(recv_counts.sum()), width))
    row = MPI.DOUBLE.Create_contiguous(width).Commit()
    try:
        comm.Alltoallv([send, (send_counts, _starts(send_counts)), row],
                       [out, (recv_counts, _starts(recv_counts)), row])
    finally:
        row.Free()
    return out


def _starts(counts):
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
