"""The training file's frame index and hash, computed by all ranks over byte ranges.

Index: rank r scans the frames that start in its 1/P of the bytes, from its first line that
could open a frame (:func:`pargap.data.frames.next_count_line`). The guess is confirmed when the
scan of the range before it ends exactly there; the ranks' atom counts are then joined in rank
order (Allgatherv: every rank has every frame's atom count, for the partition), while each rank
keeps the byte offsets of the frames it scanned and obtains those of the frames it will read
from their scanners (:func:`frames_for`). If a guess is not confirmed (a comment line that is a
lone integer) or a range fails to parse, rank 0 scans the whole file and broadcasts the whole
index, so that any error names the right structure.

Hash: the SHA-256 of the file when it is at most one block (64 MiB) long; beyond that the
SHA-256 of the sequence of its blocks' SHA-256 digests (a hash list). Blocks are dealt to ranks
round-robin. Either way a function of the file's bytes alone, whatever the number of ranks.
"""

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from pargap.data.frames import (XYZ_SUFFIXES, FrameIndex, block_digest, check_file, next_count_line, scan_frames,
                                scan_range)
from pargap.errors import InputError
from pargap.parallel import exchange_rows, gather_rows, on_root

BLOCK = 1 << 26
"""Bytes per block of the data hash (64 MiB): fixed, so that the hash does not depend on P."""


def index_frames(comm, path):
    """FrameIndex of ``path`` on every rank, scanned in byte ranges by all ranks."""
    size, rank = comm.Get_size(), comm.Get_rank()
    on_root(comm, check_file, path)
    if size == 1 or not path.lower().endswith(XYZ_SUFFIXES):
        return on_root(comm, scan_frames, path)
    n_bytes = os.path.getsize(path)
    lo, hi = rank * n_bytes // size, (rank + 1) * n_bytes // size
    start = 0 if rank == 0 else next_count_line(path, lo)
    try:
        offsets, counts, end = scan_range(path, start, hi) if start < hi else ([], [], start)
        ok = True
    except InputError:
        offsets, counts, end, ok = [], [], start, False
    edges = comm.allgather((start, end, ok))
    if not all(e[2] for e in edges) or any(edges[r][0] != edges[r - 1][1] for r in range(1, size)):
        return on_root(comm, scan_frames, path)
    first = np.concatenate([[0], np.cumsum(comm.allgather(len(counts)))])  # frames of each rank's range
    counts = gather_rows(comm, np.array(counts, dtype=np.int64))
    if len(counts) == 0:
        return on_root(comm, scan_frames, path)  # raises its error once, on every rank
    mine = dict(zip(range(first[rank], first[rank + 1]), offsets))
    if first[rank + 1] < len(counts):
        mine[int(first[rank + 1])] = end  # where this range's last frame ends
    return ScannedIndex(path, mine, counts, tuple(int(f) for f in first))


@dataclass(frozen=True)
class ScannedIndex(FrameIndex):
    """A FrameIndex whose offsets this rank holds only in part; ``first``: (P+1,) the first frame
    of each rank's byte range (rank r scanned frames first[r] to first[r+1] - 1)."""

    first: tuple = ()


def frames_for(comm, index, which):
    """``index`` with the byte offsets of the frames ``which`` (and of the frame after each)
    added, fetched from the ranks that scanned them. Collective (every rank calls it, with its
    own ``which``); an index holding every offset is returned as it is."""
    if not isinstance(index, ScannedIndex):
        return index
    size, rank = comm.Get_size(), comm.Get_rank()
    wanted = {int(i) for i in which} | {int(i) + 1 for i in which if int(i) + 1 < len(index)}
    wanted = np.array(sorted(f for f in wanted if f not in index.offsets), dtype=np.int64)
    owner = np.searchsorted(index.first, wanted, side="right") - 1
    asks = exchange_rows(comm, [np.column_stack([wanted[owner == r], np.full((owner == r).sum(), rank)]).astype(float)
                                for r in range(size)])
    replies = exchange_rows(comm, [np.column_stack([asks[asks[:, 1] == r, 0],
                                                    [index.offsets[int(f)] for f in asks[asks[:, 1] == r, 0]]])
                                   .reshape(-1, 2) for r in range(size)])
    offsets = dict(index.offsets) | {int(f): int(o) for f, o in replies}
    return ScannedIndex(index.path, offsets, index.n_atoms, index.first)


def data_hash(comm, path):
    """Hex SHA-256 of the file (at most one block), else of its blocks' SHA-256 digests in order."""
    n_bytes = os.path.getsize(path)
    if n_bytes <= BLOCK:
        return on_root(comm, lambda: block_digest(path, 0, n_bytes).hex())
    blocks = range(comm.Get_rank(), -(-n_bytes // BLOCK), comm.Get_size())
    mine = np.array([[b, *block_digest(path, b * BLOCK, BLOCK)] for b in blocks], dtype=np.int64).reshape(-1, 33)
    every = gather_rows(comm, mine)
    every = every[np.argsort(every[:, 0])]
    return hashlib.sha256(every[:, 1:].astype(np.uint8).tobytes()).hexdigest()
