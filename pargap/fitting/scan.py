"""The training file's frame index and hash, computed by all ranks over byte ranges.

Index: rank r scans the frames that start in its 1/P of the bytes, from its first line that
could open a frame (:func:`pargap.data.frames.next_count_line`). The guess is confirmed when the
scan of the range before it ends exactly there; the ranks' atom counts and offsets are then
joined in rank order (Allgatherv of arrays). If a guess is not confirmed (a comment line that is
a lone integer) or a range fails to parse, rank 0 scans the whole file as before, so that any
error names the right structure.

Hash: the SHA-256 of the file when it is at most one block (64 MiB) long; beyond that the
SHA-256 of the sequence of its blocks' SHA-256 digests (a hash list). Blocks are dealt to ranks
round-robin. Either way a function of the file's bytes alone, whatever the number of ranks.
"""

import hashlib
import os

import numpy as np

from pargap.data.frames import (XYZ_SUFFIXES, FrameIndex, block_digest, check_file, next_count_line, scan_frames,
                                scan_range)
from pargap.errors import InputError
from pargap.parallel import gather_rows, on_root

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
    counts = gather_rows(comm, np.array(counts, dtype=np.int64))
    offsets = gather_rows(comm, np.array(offsets, dtype=np.int64))
    if len(counts) == 0:
        raise InputError("file has no structures", file=path)
    return FrameIndex(path, offsets, counts)


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
