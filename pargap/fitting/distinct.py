"""Removal of repeated descriptors over all structures and ranks, by gap_fit's hash rule.

gap_fit (``exclude_duplicates``): hash_i = sum_d |x_di|; sort by hash; of two neighbours in that
order whose hashes differ by less than 1e-10 and whose components all differ by less than 1e-10,
drop the first. Here the order is (hash ascending, global number descending), a deterministic
stand-in for gap_fit's unstable heapsort, so that of bit-identical descriptors the one with the
lowest global number stays.

Distributed without gathering the descriptors: hashes are binned (width ``BIN``); each bin's
records (hash, number, rank) go to one rank, with those within the tolerance of a bin edge also
sent to the neighbouring bin, so every record meets its neighbour in the global order. That rank
names the pairs to compare; the later neighbour's owner sends its descriptor to the earlier one's
owner, which compares the components. Message sizes per rank follow the local data, not P.
"""

import numpy as np

from pargap.parallel import exchange_rows

HASH_TOLERANCE = 1e-10  # gap_fit's unique_hash_tolerance
DESCRIPTOR_TOLERANCE = 1e-10  # gap_fit's unique_descriptor_tolerance
BIN = 1e-6  # width of the hash bins that route records to ranks; any value >> HASH_TOLERANCE


def descriptor_hash(x):
    """gap_fit's hash of each row of x (n, D): sum_d |x_d| -> (n,)."""
    return np.abs(x).sum(axis=1)


def _bin_owner(b, size):
    return (b % size).astype(np.int64)


def repeated(comm, x, number):
    """True for the rows of this rank's x (n, D) that gap_fit's rule drops. number (n,): their
    global descriptor numbers, ascending (unique over ranks)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    h = descriptor_hash(x)
    b = np.floor(h / BIN).astype(np.int64)
    records = np.column_stack([h, number.astype(float), np.full(len(h), float(rank)), b.astype(float)])
    # home bin, plus the neighbouring bin for records within the tolerance of an edge
    low = h - b * BIN < HASH_TOLERANCE
    high = (b + 1) * BIN - h < HASH_TOLERANCE
    routed = [records, records[low], records[high]]
    bins = [b, b[low] - 1, b[high] + 1]
    send = [np.concatenate([r[_bin_owner(bb, size) == dest] for r, bb in zip(routed, bins)]) for dest in range(size)]
    got = exchange_rows(comm, send)
    pairs = _neighbour_pairs(got, size, rank)
    # pairs: (earlier number, earlier rank, later number, later rank); the later one's owner sends
    # its row to the earlier one's owner
    asks = exchange_rows(comm, [pairs[pairs[:, 3] == dest] for dest in range(size)])
    answers = exchange_rows(comm, [np.column_stack([asks[to, 0], x[_positions(number, asks[to, 2])]])
                                   for to in (asks[:, 1] == dest for dest in range(size))])
    drop = np.zeros(len(x), dtype=bool)
    if len(answers):
        i = _positions(number, answers[:, 0])
        drop[i[np.max(np.abs(x[i] - answers[:, 1:]), axis=1) < DESCRIPTOR_TOLERANCE]] = True
    return drop


def _positions(number, wanted):
    """Positions in number (ascending) of the values wanted (all present)."""
    return np.searchsorted(number, wanted.astype(np.int64))


def _neighbour_pairs(records, size, rank):
    """Pairs of global-order neighbours whose hashes are within the tolerance, the earlier one in
    a bin this rank owns -> (n, 4): earlier number, earlier rank, later number, later rank."""
    if len(records) == 0:
        return np.zeros((0, 4))
    h, g, r, b = records.T
    order = np.lexsort((-g, h))  # hash ascending, number descending
    h, g, r, b = h[order], g[order], r[order], b[order]
    # spilled copies of a record appear twice only if both its bins route here: keep one
    keep = np.concatenate([[True], g[1:] != g[:-1]]) if len(g) > 1 else np.ones(len(g), dtype=bool)
    # (equal numbers are adjacent: same hash, same number)
    h, g, r, b = h[keep], g[keep], r[keep], b[keep]
    near = np.flatnonzero(np.diff(h) < HASH_TOLERANCE)
    mine = _bin_owner(b[near].astype(np.int64), size) == rank
    i = near[mine]
    return np.column_stack([g[i], r[i], g[i + 1], r[i + 1]])
