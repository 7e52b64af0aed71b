"""Sparse point selection, collective and independent of the number of ranks.

Descriptors are numbered globally: structures in file order, then each structure's descriptors
in the descriptor's own order. Every method picks by global number, so the chosen points are the
same for any rank count. Exact duplicates are removed from the candidates first, as gap_fit does,
but within each structure only (distance_2b lists every pair twice; gap_fit also removes
duplicates across structures, which pargap does not yet). ``index_file`` indices refer to the
full list, duplicates included (1-based, as gap_fit).
"""

import warnings
from dataclasses import dataclass

import numpy as np

from pargap.errors import ConfigError, InputError

DUPLICATE_TOLERANCE = 1e-10


@dataclass
class DescriptorPool:
    """This rank's descriptors of one model: x (n, D), weight (n,), structure (n,) global index of
    the owning structure, ascending."""

    x: np.ndarray
    weight: np.ndarray
    structure: np.ndarray


def unique_mask(x, tol=DUPLICATE_TOLERANCE):
    """True for the first of every group of rows of x equal within ``tol`` (max abs difference)."""
    n = len(x)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    order = np.lexsort(x.T[::-1])
    xs = x[order]
    same = np.all(np.abs(np.diff(xs, axis=0)) < tol, axis=1)
    # within a run of equal rows keep the smallest original index
    run = np.concatenate([[0], np.cumsum(~same)])
    first = np.full(run[-1] + 1, n)
    np.minimum.at(first, run, order)
    keep[:] = False
    keep[first] = True
    return keep


def _global_offsets(comm, counts):
    """Global start index of each structure's block, from every rank's {structure: count}."""
    merged = {}
    for part in comm.allgather(counts):
        merged.update(part)
    offsets, total = {}, 0
    for s in sorted(merged):
        offsets[s] = total
        total += merged[s]
    return offsets, total


def _collect(comm, pool, local_positions, global_ids):
    """Gather the chosen points (x, w) from their owners, ordered by global id."""
    mine = [(int(g), pool.x[p], float(pool.weight[p])) for p, g in zip(local_positions, global_ids)]
    chosen = []
    for part in comm.allgather(mine):
        chosen.extend(part)
    chosen.sort(key=lambda t: t[0])
    ids = np.array([c[0] for c in chosen], dtype=np.int64)
    D = pool.x.shape[1]
    x = np.array([c[1] for c in chosen]).reshape(len(chosen), D)
    w = np.array([c[2] for c in chosen])
    return x, w, ids


def _segments(structure):
    """(structure ids, start, count) of the runs of a sorted structure-index array."""
    ids, start, count = np.unique(structure, return_index=True, return_counts=True)
    return ids, start, count


def _numbering(comm, structure, keep):
    """Global numbers of the kept local rows: structures in file order, rows in order within each.
    structure (n,) sorted; keep (n,) bool. Returns (positions of kept rows, their global numbers, total)."""
    ids, start, count = _segments(structure)
    kept = np.add.reduceat(keep.astype(np.int64), start) if len(start) else np.zeros(0, dtype=np.int64)
    offsets, total = _global_offsets(comm, dict(zip(ids.tolist(), kept.tolist())))
    positions = np.flatnonzero(keep)
    # rank of each kept row inside its structure, plus the structure's global offset
    first_kept = np.repeat(np.cumsum(kept) - kept, kept)
    base = np.repeat(np.array([offsets[i] for i in ids.tolist()], dtype=np.int64), kept)
    return positions, base + np.arange(len(positions)) - first_kept, total


def select_sparse(comm, pool, *, method, n_sparse=None, seed=0, sparse_file=None, where="model"):
    """Choose the sparse points of one model. Returns (sparse_x (M, D), sparse_weight (M,), ids (M,)).

    ids are the global descriptor numbers of the points (0-based, duplicates counted, so that
    ids + 1 written one per line is an ``index_file`` reproducing the choice; empty for ``file``).
    Files are read on rank 0 and broadcast."""
    from pargap.parallel import on_root

    if method == "file":
        return on_root(comm, read_sparse_file, sparse_file, pool.x.shape[1], where) + (np.arange(0),)

    everything = np.ones(len(pool.x), dtype=bool)
    _, number, n_all = _numbering(comm, pool.structure, everything)  # duplicates included

    if method == "index_file":
        idx = on_root(comm, read_index_file, sparse_file, where)
        if n_sparse and len(idx) != n_sparse:
            raise ConfigError(f"{where}: n_sparse={n_sparse} but {sparse_file} lists {len(idx)} indices")
        if idx.max() > n_all:
            raise InputError(f"index {idx.max()} exceeds the {n_all} descriptors of {where}", file=sparse_file)
        pos = np.flatnonzero(np.isin(number, idx - 1))
        return _collect(comm, pool, pos, number[pos])

    cand = np.zeros(len(pool.x), dtype=bool)
    for s, first, count in zip(*_segments(pool.structure)):
        cand[first:first + count] = unique_mask(pool.x[first:first + count])
    cand_local, cand_global, n_cand = _numbering(comm, pool.structure, cand)
    if n_cand == 0:
        raise InputError(f"{where}: no descriptors in the training data (is the cutoff too short?)")

    if method == "none":
        chosen = cand_global
    else:
        m = n_sparse
        if m > n_cand:
            if comm.Get_rank() == 0:
                warnings.warn(f"{where}: n_sparse={m} exceeds the {n_cand} distinct descriptors; using all of them",
                              RuntimeWarning, stacklevel=2)
            m = n_cand  # gap_fit caps n_sparse at the number of candidates, with a warning
        if method == "random":
            chosen = np.sort(np.random.default_rng(seed).choice(n_cand, size=m, replace=False))
        elif method == "uniform":
            chosen = _uniform(comm, pool.x[cand_local], cand_global, n_cand, m, seed)
        elif method == "cur_points":
            chosen = _cur_points(comm, pool.x[cand_local], cand_global, n_cand, m, seed)
        elif method == "farthest_point":
            chosen = _farthest_point(comm, pool.x[cand_local], cand_global, m)
        else:
            raise ConfigError(f"{where}: unknown sparse_method '{method}'")
    take = np.isin(cand_global, chosen)
    return _collect(comm, pool, cand_local[take], number[cand_local[take]])


def _uniform(comm, x, gid, n_cand, m, seed):
    """gap_fit's select_uniform: a grid of ceil(m^(1/D)) bins per dimension over the data range;
    walking the candidates in global order, take each one whose bin is still empty, until m.
    Missing picks (fewer occupied bins than m) are filled at random from the rest, seeded."""
    D = x.shape[1]
    lo = np.min([p for p in comm.allgather(x.min(0) if len(x) else None) if p is not None], axis=0)
    hi = np.max([p for p in comm.allgather(x.max(0) if len(x) else None) if p is not None], axis=0)
    G = int(np.ceil(m ** (1.0 / D) - 1e-12))
    if D * np.log2(max(G, 2)) > 62:
        raise ConfigError(f"sparse_method=uniform needs a low-dimensional descriptor ({G}^{D} bins); use cur_points")
    span = np.where(hi > lo, hi - lo, 1.0)
    t = (x - lo) / span * (G - 1)
    b = np.floor(t + 0.5).astype(np.int64)  # Fortran nint: half away from zero (t >= 0 here)
    flat = (b * (G ** np.arange(D))).sum(1) if len(x) else np.zeros(0, dtype=np.int64)
    first = {}
    for f, g in zip(flat.tolist(), gid.tolist()):
        if f not in first or g < first[f]:
            first[f] = g
    merged = {}
    for part in comm.allgather(first):
        for f, g in part.items():
            if f not in merged or g < merged[f]:
                merged[f] = g
    picks = sorted(merged.values())[:m]
    if len(picks) < m:
        rest = np.setdiff1d(np.arange(n_cand), picks)
        extra = np.random.default_rng(seed).choice(rest, size=m - len(picks), replace=False)
        picks = sorted(picks + extra.tolist())
    return np.array(picks, dtype=np.int64)


def _smallest(comm, scores, gid, m):
    """Global ids of the m smallest scores over all ranks (ties by lower id); each rank sends only
    its own m best."""
    order = np.lexsort((gid, scores))[:m]
    merged = [(float(sc), int(g)) for part in comm.allgather(list(zip(scores[order], gid[order]))) for sc, g in part]
    merged.sort()
    return np.sort(np.array([g for _, g in merged[:m]], dtype=np.int64))


def _cur_points(comm, x, gid, n_cand, m, seed):
    """gap_fit's cur_points on the D x n matrix X of candidates (columns), without gathering X.

    X = U S V^T: from the D x D Gram matrix X X^T = U S^2 U^T (summed over ranks) each rank gets
    its own rows of V = X^T U S^-1. Rank k = floor(#(s > tol) / 2); leverage
    p_j = min(1, (m/k) sum_{r<=k} V_jr^2); draw u_j ~ U(0, 1) (one stream over the global candidate
    numbers, so any rank count gives the same draw) and take the m smallest u_j - p_j.
    tol = max(1e-13, s_max sqrt(D eps)): singular values below that are not resolved by the Gram."""
    D = x.shape[1]
    gram = sum(comm.allgather(x.T @ x))
    lam, U = np.linalg.eigh(gram)
    lam, U = lam[::-1], U[:, ::-1]
    s = np.sqrt(np.clip(lam, 0.0, None))
    tol = max(1e-13, s[0] * np.sqrt(D * np.finfo(float).eps))
    k = max(1, int(np.sum(s > tol)) // 2)
    V = (x @ U[:, :k]) / s[:k]
    leverage = np.minimum(1.0, (m / k) * (V**2).sum(1))
    u = np.random.default_rng(seed).random(n_cand)[gid]
    return _smallest(comm, u - leverage, gid, m)


def _farthest_point(comm, x, gid, m):
    """Farthest-point sampling in descriptor space (Euclidean): start from candidate 0, then
    repeatedly add the candidate farthest from all chosen ones; the argmax is global (ties by
    lower id), so the result does not depend on the number of ranks."""
    chosen = []
    dist = np.full(len(x), np.inf)
    for step in range(m):
        if step == 0:
            best = np.flatnonzero(gid == 0)
        else:
            dist = np.minimum(dist, ((x - point) ** 2).sum(1))
            best = np.lexsort((gid, -dist))[:1]
        offer = (float(dist[best[0]]), int(gid[best[0]]), x[best[0]]) if len(best) else None
        offers = [o for o in comm.allgather(offer) if o is not None]
        d_best, g_best, point = max(offers, key=lambda o: (o[0], -o[1]))
        if d_best <= 0.0:
            break  # every remaining candidate coincides with a chosen one
        chosen.append(g_best)
    return np.sort(np.array(chosen, dtype=np.int64))


def read_index_file(path, where):
    """gap_fit's ``index_file``: one 1-based descriptor index per line."""
    try:
        with open(path) as fh:
            idx = np.array([int(line.split()[0]) for line in fh if line.strip()], dtype=np.int64)
    except FileNotFoundError:
        raise InputError(f"sparse_file for {where} not found", file=path) from None
    except ValueError as exc:
        raise InputError(f"not a list of integers ({exc})", file=path) from None
    if len(idx) == 0 or idx.min() < 1:
        raise InputError("indices must be 1-based and at least one", file=path)
    return np.unique(idx)


def read_sparse_file(path, dimension, where):
    """gap_fit's ``file``: per sparse point its cutoff weight, then its D components, one per line."""
    try:
        with open(path) as fh:
            values = np.array([float(line) for line in fh if line.strip()])
    except FileNotFoundError:
        raise InputError(f"sparse_file for {where} not found", file=path) from None
    except ValueError as exc:
        raise InputError(f"not a list of numbers ({exc})", file=path) from None
    if len(values) == 0 or len(values) % (dimension + 1):
        raise InputError(f"expected a multiple of {dimension + 1} numbers (weight + {dimension} components)", file=path)
    values = values.reshape(-1, dimension + 1)
    return values[:, 1:].copy(), values[:, 0].copy()
