"""Sparse point selection, collective and independent of the number of ranks.

Descriptors are numbered globally: structures in file order, then each structure's descriptors
in the descriptor's own order. Every method picks by global number, so the chosen points are the
same for any rank count, and every collective sends per rank an amount that does not grow with
the rank count P: sums are in-place Allreduces, the m smallest scores are found by bisection on a
threshold (scalar reductions), random numbers come from a stream keyed by the global number, and
the chosen points are gathered as arrays (Allgatherv).

Repeated descriptors are removed from the candidates first, over all structures, by gap_fit's
hash rule (:mod:`pargap.fitting.distinct`). ``index_file`` indices refer to the full list,
repeated descriptors included (1-based, as gap_fit). With ``config_type_n_sparse`` the points
are chosen separately among the candidates of each config type and joined.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from pargap.errors import ConfigError, InputError
from pargap.fitting.cur import leverage
from pargap.fitting.distinct import DESCRIPTOR_TOLERANCE, HASH_TOLERANCE, repeated
from pargap.fitting.random_stream import uniform_by_id
from pargap.parallel import broadcast, gather_rows, largest, min_in_place, on_root, smallest, sum_in_place, total

UNIFORM_MAX_BINS = 2**24
"""Largest grid of ``uniform`` (G^D bins): its first-candidate table is reduced as a dense array."""


@dataclass
class DescriptorPool:
    """This rank's descriptors of one model: x (n, D), weight (n,), structure (n,) global index of
    the owning structure, ascending."""

    x: np.ndarray
    weight: np.ndarray
    structure: np.ndarray
    config_type: np.ndarray | None = None


def global_numbers(comm, structure, keep):
    """Global numbers of the kept local rows: structures in file order, rows in order within each.
    structure (n,) ascending; keep (n,) bool. -> (positions of the kept rows, their numbers, total).

    The kept counts per structure are summed over ranks in one array as long as the number of
    structures (each structure lives on one rank)."""
    n_structures = largest(comm, int(structure[-1]) + 1 if len(structure) else 0)
    per_structure = np.bincount(structure[keep], minlength=n_structures).astype(np.int64)
    sum_in_place(comm, per_structure)
    offsets = np.concatenate([[0], np.cumsum(per_structure)[:-1]])
    positions = np.flatnonzero(keep)
    s = structure[positions]
    # rank of each kept row inside its structure, plus the structure's global offset
    first = np.searchsorted(s, s, side="left")
    return positions, offsets[s] + np.arange(len(positions)) - first, int(per_structure.sum())


def _collect(comm, pool, positions, number):
    """The chosen points (x (M, D), w (M,), numbers (M,)) from their owners, ordered by number."""
    ids = gather_rows(comm, number.astype(np.int64))
    x = gather_rows(comm, pool.x[positions])
    w = gather_rows(comm, pool.weight[positions])
    order = np.argsort(ids, kind="stable")
    return x[order], w[order], ids[order]


def select_sparse(comm, pool, *, method, n_sparse=None, seed=0, sparse_file=None, where="model",
                  config_type_n_sparse=None, tolerances=(DESCRIPTOR_TOLERANCE, HASH_TOLERANCE), kernel=None):
    """Choose the sparse points of one model. Returns (sparse_x (M, D), sparse_weight (M,), ids (M,)).

    ids are the global descriptor numbers of the points (0-based, repeated descriptors counted, so
    that ids + 1 is an ``index_file`` reproducing the choice; empty for ``file``). Files are read
    on rank 0 and broadcast. config_type_n_sparse: {config type: n}, chosen separately among the
    candidates of each type (pool.config_type) instead of n_sparse among all; tolerances:
    (descriptor, hash) tolerance of repeats (gap_fit's unique_descriptor_tolerance,
    unique_hash_tolerance); kernel: if given, farthest_point measures distances with it (gap_fit's
    sparse_use_actual_gpcov)."""
    if method == "file":
        return on_root(comm, read_sparse_file, sparse_file, pool.x.shape[1], where) + (np.arange(0),)

    _, number, n_all = global_numbers(comm, pool.structure, np.ones(len(pool.x), dtype=bool))

    if method == "index_file":
        idx = on_root(comm, read_index_file, sparse_file, where)
        if n_sparse and len(idx) != n_sparse:
            raise ConfigError(f"{where}: n_sparse={n_sparse} but {sparse_file} lists {len(idx)} indices")
        if idx.max() > n_all:
            raise InputError(f"index {idx.max()} exceeds the {n_all} descriptors of {where}", file=sparse_file)
        pos = np.flatnonzero(np.isin(number, idx - 1))
        return _collect(comm, pool, pos, number[pos])

    cand = ~repeated(comm, pool.x, number, *tolerances)
    if total(comm, int(np.count_nonzero(cand))) == 0:
        raise InputError(f"{where}: no descriptors in the training data (is the cutoff too short?)")
    if config_type_n_sparse is None:
        groups = [(cand, n_sparse, where)]
    else:  # gap_fit's config_type_n_sparse: one selection per config type, joined
        groups = [(cand & (pool.config_type == t), n, f"{where}, config type {t}")
                  for t, n in config_type_n_sparse.items() if n > 0]
    taken = []
    for k, (mask, m, label) in enumerate(groups):
        cand_local, cand_global, n_cand = global_numbers(comm, pool.structure, mask)
        take = _choose(comm, pool.x, cand_local, cand_global, number[cand_local], n_cand, method, m,
                       seed + 7919 * k, label, kernel)
        taken.append(cand_local[take])
    positions = np.unique(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
    return _collect(comm, pool, positions, number[positions])


def _choose(comm, pool_x, rows, cand_global, ids, n_cand, method, m, seed, where, kernel=None):
    """True for this rank's candidates that ``method`` picks, m among n_cand over all ranks.
    pool_x (n, D) this rank's descriptors, rows (n_c,) the positions of its candidates in it,
    cand_global (n_c,) their candidate numbers, ids (n_c,) their descriptor numbers."""
    if n_cand == 0:
        if comm.Get_rank() == 0:
            warnings.warn(f"{where}: no descriptors to choose sparse points from", RuntimeWarning, stacklevel=3)
        return np.zeros(len(rows), dtype=bool)
    if method == "none":
        return np.ones(len(rows), dtype=bool)
    if m > n_cand:
        if comm.Get_rank() == 0:
            warnings.warn(f"{where}: n_sparse={m} exceeds the {n_cand} distinct descriptors; using all of them",
                          RuntimeWarning, stacklevel=3)
        m = n_cand  # gap_fit caps n_sparse at the number of candidates, with a warning
    if method == "random":
        return smallest_scores(comm, uniform_by_id(seed, ids), ids, m)
    if method == "uniform":
        return _uniform(comm, pool_x[rows], cand_global, ids, m, seed)
    if method == "cur_points":
        return smallest_scores(comm, uniform_by_id(seed, ids) - leverage(comm, pool_x, m, rows), ids, m)
    if method == "farthest_point":
        return _farthest_point(comm, pool_x[rows], cand_global, m, kernel)
    raise ConfigError(f"{where}: unknown sparse_method '{method}'")


def _ordered_keys(scores):
    """int64 keys in the order of the float64 scores (IEEE bits, negatives flipped)."""
    bits = np.ascontiguousarray(scores, dtype=np.float64).view(np.int64)
    return np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)


def _least_reaching(comm, values, lo, hi, m):
    """Smallest t in [lo, hi] with #(values <= t) summed over ranks >= m (bisection; int64)."""
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if total(comm, int(np.count_nonzero(values <= mid))) >= m:
            hi = mid
        else:
            lo = mid + 1
    return lo


def smallest_scores(comm, scores, ids, m):
    """True for this rank's share of the m smallest scores over all ranks, ties to the lower id.
    scores, ids (n_p,). Bisection on the score's bits, then on the id among equal scores: about
    128 scalar reductions, whatever the number of ranks and candidates."""
    key = _ordered_keys(scores)
    big, tiny = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    lo = smallest(comm, int(key.min()) if len(key) else big)
    hi = largest(comm, int(key.max()) if len(key) else tiny)
    t = _least_reaching(comm, key, lo, hi, m)
    below = key < t
    rest = m - total(comm, int(np.count_nonzero(below)))
    tied = key == t
    tied_ids = np.where(tied, ids, big)
    g = _least_reaching(comm, tied_ids, 0, largest(comm, int(ids.max()) if len(ids) else 0), rest)
    return below | (tied & (ids <= g))


def _uniform(comm, x, cand_global, ids, m, seed):
    """gap_fit's select_uniform: a grid of G = ceil(m^(1/D)) points per dimension over the data
    range; walking the candidates in global order, take each one whose bin is still empty, until m.
    Missing picks (fewer occupied bins than m) are filled at random from the rest, seeded."""
    D = x.shape[1]
    lo = min_in_place(comm, x.min(0) if len(x) else np.full(D, np.inf))
    hi = -min_in_place(comm, -x.max(0) if len(x) else np.full(D, np.inf))
    G = int(np.ceil(m ** (1.0 / D) - 1e-12))
    if D * np.log2(max(G, 2)) > np.log2(UNIFORM_MAX_BINS):
        raise ConfigError(f"sparse_method=uniform needs a low-dimensional descriptor ({G}^{D} bins); use cur_points")
    span = np.where(hi > lo, hi - lo, 1.0)
    b = np.floor((x - lo) / span * (G - 1) + 0.5).astype(np.int64)  # Fortran nint (t >= 0 here)
    flat = (b * (G ** np.arange(D, dtype=np.int64))).sum(1)
    none = np.iinfo(np.int64).max
    first = np.full(G**D, none, dtype=np.int64)  # lowest candidate number in each bin
    np.minimum.at(first, flat, cand_global)
    min_in_place(comm, first)
    firsts = np.sort(first[first < none])[:m]
    take = np.isin(cand_global, firsts)
    missing = m - len(firsts)
    if missing > 0:
        u = np.where(take, np.inf, uniform_by_id(seed, ids))
        take |= smallest_scores(comm, u, ids, missing)
    return take


def kernel_distance2(kernel, x, point):
    """Squared kernel distance of the rows of x (n, D) from one point (D,), with the normalised
    kernel: d^2 = 2 (1 - k(x, s) / sqrt(k(x, x) k(s, s))) (gap_fit's kernel_distance_matrix)."""
    s = point[None, :]
    k = kernel(x, s)[:, 0]
    return np.maximum(2.0 * (1.0 - k / np.sqrt(kernel.diag(x) * kernel.diag(s)[0])), 0.0)


def _farthest_point(comm, x, cand_global, m, kernel=None):
    """Farthest-point sampling in descriptor space (Euclidean, or the kernel distance if a kernel
    is given): start from candidate 0, then
    repeatedly add the candidate farthest from all chosen ones (ties to the lower candidate
    number). Per step: a maximum, a minimum (number, owner), and a broadcast of one point."""
    rank = comm.Get_rank()
    take = np.zeros(len(x), dtype=bool)
    dist = np.full(len(x), np.inf)
    point = np.empty(x.shape[1])
    for step in range(m):
        if step == 0:
            best, d_best = 0, np.inf
        else:
            d2 = ((x - point) ** 2).sum(1) if kernel is None else kernel_distance2(kernel, x, point)
            dist = np.minimum(dist, d2)
            d_best = largest(comm, float(dist[~take].max()) if np.any(~take) else -1.0)
            if d_best <= 0.0:
                break  # every remaining candidate coincides with a chosen one
            at = ~take & (dist == d_best)
            best = smallest(comm, int(cand_global[at].min()) if np.any(at) else np.iinfo(np.int64).max)
        mine = np.flatnonzero(cand_global == best)
        owner = smallest(comm, rank if len(mine) else comm.Get_size())
        if len(mine):
            take[mine[0]] = True
            point[:] = x[mine[0]]
        broadcast(comm, point, owner)
    return take


def read_index_file(path, where):
    """gap_fit's ``index_file``: 1-based descriptor indices, one per line or several per line
    separated by spaces (the layout of gap_fit's print_sparse_index); sorted, repeats dropped."""
    try:
        with open(path) as fh:
            idx = np.array([int(word) for line in fh for word in line.split()], dtype=np.int64)
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
