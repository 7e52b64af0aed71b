"""Uniform random numbers keyed by a global descriptor number: the same u for descriptor g on
whichever rank holds it, so a random choice does not depend on the rank count.

Counter-based stream (numpy's Philox-4x64, keyed by the seed): u(g) is 64-bit word g mod 4 of the
Philox block g div 4 + 1, mapped to [0, 1) as numpy's ``Generator.random`` maps it (top 53 bits).
A rank draws only for the numbers it holds, one Philox per run of consecutive numbers.
"""

import numpy as np

WORDS = 4  # 64-bit outputs per Philox-4x64 block


def uniform_by_id(seed, ids):
    """u (n,) in [0, 1) for global numbers ids (n,) >= 0 under ``seed`` (int >= 0)."""
    ids = np.asarray(ids, dtype=np.int64)
    u = np.empty(len(ids))
    if len(ids) == 0:
        return u
    order = np.argsort(ids, kind="stable")
    g = ids[order]
    breaks = np.flatnonzero(np.diff(g) != 1) + 1
    out = np.empty(len(g))
    for start, stop in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(g)]])):
        first, last = int(g[start]), int(g[stop - 1])
        block, skip = divmod(first, WORDS)
        # a fresh Philox increments its counter before the first block it returns
        raw = np.random.Philox(key=seed, counter=block).random_raw(skip + last - first + 1)
        out[start:stop] = (raw[skip:] >> np.uint64(11)) * 2.0**-53
    u[order] = out
    return u
