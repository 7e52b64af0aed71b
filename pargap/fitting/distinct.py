"""Removal of repeated descriptors over all structures and ranks, by gap_fit's hash rule.

gap_fit (gp_fit.f95, before any sparse method): hash_i = sum_d |x_di|; sort by hash; of two
neighbours in that order whose hashes differ by less than 1e-10 and whose components all differ
by less than 1e-10, drop the first. Here the order is (hash ascending, global number
descending), a deterministic stand-in for gap_fit's unstable heapsort, so that of bit-identical
descriptors the one with the lowest global number stays.

Distributed without gathering the descriptors: hashes are binned (width ``BIN``); each bin's
records (hash, number, rank) go to one rank, with those within the tolerance of a bin edge also
sent to the neighbouring bin, so every record meets its neighbour in the global order. That rank
names the pairs to compare; the later neighbour's owner sends its descriptor to the earlier one's
owner, which compares the components. Message sizes per rank follow the local data, not P.
"""

import numpy as np

from pargap.parallel import exchange_rows, largest

HASH_TOLERANCE = 1e-10  # gap_fit's unique_hash_tolerance
DESCRIPTOR_TOLERANCE = 1e-10  # gap_fit's unique_descriptor_tolerance
ANSWER_BYTES = 16 * 2**20
"""Descriptors sent per rank per round of comparisons."""
BIN = 1e-6  # width of the hash bins that route records to ranks; any value >> HASH_TOLERANCE


def descriptor_hash(x):
    """gap_fit's hash of each row of x (n, D): sum_d |x_d| -> (n,)."""
    return np.abs(x).sum(axis=1)


def _bin_owner(b, size):
    return (b % size).astype(np.int64)


def repeated(comm, x, number, descriptor_tolerance=DESCRIPTOR_TOLERANCE, hash_tolerance=HASH_TOLERANCE):
    """True for the rows of this rank's x (n, D) that gap_fit's rule drops. number (n,): their
    global descriptor numbers, ascending (unique over ranks); the tolerances are gap_fit's
    unique_descriptor_tolerance and unique_hash_tolerance."""
    rank, size = comm.Get_rank(), comm.Get_size()
    width = max(BIN, 4 * hash_tolerance)  # a record meets its neighbour within one bin of its own
    h = descriptor_hash(x)
    records = np.column_stack([h, number.astype(float), np.full(len(h), float(rank))])
    if size > 1:
        b = np.floor(h / width).astype(np.int64)
        # home bin, plus the neighbouring bin for records within the tolerance of an edge
        low = h - b * width < hash_tolerance
        high = (b + 1) * width - h < hash_tolerance
        routed = [(records, b), (records[low], b[low] - 1), (records[high], b[high] + 1)]
        del h, low, high
        records = exchange_rows(comm, [np.concatenate([r[_bin_owner(bb, size) == dest] for r, bb in routed])
                                       for dest in range(size)])
        del routed
    pairs = _neighbour_pairs(records, size, rank, hash_tolerance, width)
    del records
    # pairs: (earlier number, earlier rank, later number, later rank); the later one's owner sends
    # its row to the earlier one's owner
    asks = exchange_rows(comm, [pairs[pairs[:, 3] == dest] for dest in range(size)])
    # the descriptors asked for are sent in rounds of at most ANSWER_BYTES per rank (many repeats:
    # as many rows as the repeated descriptors themselves)
    per_round = max(1, ANSWER_BYTES // (8 * (x.shape[1] + 1)))
    n_rounds = largest(comm, -(-len(asks) // per_round))
    drop = np.zeros(len(x), dtype=bool)
    for k in range(n_rounds):
        part = asks[k * per_round:(k + 1) * per_round]
        answers = exchange_rows(comm, [np.column_stack([part[to, 0], x[_positions(number, part[to, 2])]])
                                       for to in (part[:, 1] == dest for dest in range(size))])
        if len(answers):
            i = _positions(number, answers[:, 0])
            drop[i[np.max(np.abs(x[i] - answers[:, 1:]), axis=1) < descriptor_tolerance]] = True
    return drop


def _positions(number, wanted):
    """Positions in number (ascending) of the values wanted (all present)."""
    return np.searchsorted(number, wanted.astype(np.int64))


def _neighbour_pairs(records, size, rank, hash_tolerance, width):
    """Pairs of global-order neighbours whose hashes are within the tolerance, the earlier one in
    a bin (of ``width``) this rank owns -> (n, 4): earlier number, earlier rank, later number,
    later rank. records (n, 3): hash, number, rank."""
    if len(records) == 0:
        return np.zeros((0, 4))
    order = np.lexsort((-records[:, 1], records[:, 0]))  # hash ascending, number descending
    h, g = records[order, 0], records[order, 1]
    # spilled copies of a record appear twice only if both its bins route here: keep one
    # (equal numbers are adjacent: same hash, same number)
    keep = np.concatenate([[True], g[1:] != g[:-1]])
    order, h, g = order[keep], h[keep], g[keep]
    near = np.flatnonzero(np.diff(h) < hash_tolerance)
    mine = _bin_owner(np.floor(h[near] / width).astype(np.int64), size) == rank
    i = near[mine]
    r = records[order[i], 2], records[order[i + 1], 2]
    return np.column_stack([g[i], r[0], g[i + 1], r[1]])
