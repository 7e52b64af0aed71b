"""Collectives whose message size per rank does not grow with the rank count P.

Each takes numpy arrays and works the same with mpi4py's COMM_WORLD and with SerialComm (one
process, no MPI started): with one rank they return at once.
"""

import numpy as np


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
        displacements = np.concatenate([[0], np.cumsum(counts)[:-1]])
        comm.Allgatherv([rows, len(rows), row], [out, (counts, displacements), row])
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
