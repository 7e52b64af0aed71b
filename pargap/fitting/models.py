"""Phases descriptors and sparse points: per model, the descriptor values of this rank's
structures (a pool), then the sparse points chosen from all ranks' pools -> the Models."""

import dataclasses

import numpy as np

from pargap.errors import PargapError
from pargap.fitting.sparsify import DescriptorPool, select_sparse
from pargap.gp.kernels import make_kernel
from pargap.gp.model import Model
from pargap.parallel import collective


def draw_seed(comm, rnd_seed):
    """The fit's random seed: ``rnd_seed``, or one drawn on rank 0 when it is negative (the same on
    every rank; recorded in the potential so that the fit can be repeated)."""
    if rnd_seed >= 0:
        return rnd_seed
    return comm.bcast(int(np.random.SeedSequence().entropy % 2**31) if comm.Get_rank() == 0 else None, root=0)


POOL_CHUNK_BYTES = 8 * 2**20
"""A pool's descriptors are written straight into one array when the descriptor can count them
beforehand (SOAP: one per centre atom); other descriptors' (low-dimensional: pairs, triplets) are
gathered in chunks of this size, then copied into one array."""


def descriptor_pools(structures, expanded):
    """Descriptor values (no gradients) of this rank's structures, one pool per model."""
    return [_pool(structures, descriptor) for descriptor, _, _, _ in expanded]


def _pool(structures, descriptor):
    if hasattr(descriptor, "count"):  # sizes known beforehand (SOAP): written straight into the pool
        counts = [descriptor.count(s.atoms) for s in structures]
        n = sum(counts)
        x, weight, owner = np.empty((n, descriptor.dimension)), np.empty(n), np.empty(n, dtype=np.int64)
        start = 0
        for s, k in zip(structures, counts):
            d = descriptor.compute(s.atoms, gradients=False)
            x[start:start + k], weight[start:start + k], owner[start:start + k] = d.x, d.weight, s.index
            start += k
        return DescriptorPool(x, weight, owner)
    D = descriptor.dimension
    width = D + 2  # x, weight, owning structure
    rows = max(1, POOL_CHUNK_BYTES // (8 * width))
    chunks, chunk, used = [], np.empty((rows, width)), 0
    for s in structures:
        d = descriptor.compute(s.atoms, gradients=False)
        values = np.column_stack([d.x, d.weight, np.full(len(d), float(s.index))])
        while len(values):
            take = min(len(values), rows - used)
            chunk[used:used + take] = values[:take]
            values, used = values[take:], used + take
            if used == rows:
                chunks.append(chunk)
                chunk, used = np.empty((rows, width)), 0
    chunks.append(chunk[:used])
    n = sum(len(c) for c in chunks)
    x, weight, owner = np.empty((n, D)), np.empty(n), np.empty(n, dtype=np.int64)
    start = 0
    for k in range(len(chunks)):
        c, chunks[k] = chunks[k], None
        x[start:start + len(c)], weight[start:start + len(c)] = c[:, :D], c[:, D]
        owner[start:start + len(c)] = c[:, D + 1]
        start += len(c)
    return DescriptorPool(x, weight, owner)


def theta_from_range(comm, g, descriptor, pool):
    """gap_fit's theta_fac: theta_d = fac_d (max_d - min_d), the range of dimension d over all
    descriptors of the model on all ranks; 1 where that is below 1e-8 (gpCoordinates_setThetaFactor)."""
    D = descriptor.dimension
    ranges = [r for r in comm.allgather((pool.x.min(0), pool.x.max(0)) if len(pool.x) else None) if r is not None]
    lo, hi = np.min([r[0] for r in ranges], axis=0), np.max([r[1] for r in ranges], axis=0)
    theta = np.asarray(g.theta_fac_vector(D)) * (hi - lo)
    return np.where(theta < 1e-8, 1.0, theta)


def sparse_config_types(pool, g, known_types=()):
    """The config type of each descriptor as config_type_n_sparse counts it: its structure's,
    if that is one of the types named in config_type_n_sparse or ``known_types`` (those of
    config_type_sigma), else "default" (gap_fit's rule)."""
    known = set(g.config_type_n_sparse) | set(known_types)
    return np.where(np.isin(pool.config_type, list(known)), pool.config_type, "default")


def sparse_models(comm, structures, expanded, seed, log, name="model", print_sparse_index=True, known_types=(),
                  actual_gpcov=False):
    """Descriptors and sparse points, model by model -> [Model] (alpha None): each model's pool
    (the descriptor values of this rank's structures) is computed, used for its selection and
    freed before the next model's, so at most one model's descriptors are held. A model that
    species expansion made for a species combination no structure has (e.g. O-O in ethanol: no
    descriptors on any rank) is dropped. Model k of those kept draws with seed ``seed + k``; its
    gap entry's print_sparse_index file gets the chosen descriptors' indices when
    ``print_sparse_index``. A theta_fac kernel gets its length scales from the pool's range here;
    config_type_n_sparse counts config types as :func:`sparse_config_types` (``known_types``:
    config_type_sigma's); ``actual_gpcov`` (sparse_use_actual_gpcov): farthest_point measures
    distances with the model's kernel."""
    unaffected = sorted({g.sparse_method for _, _, g, _ in expanded if g.sparse_method != "farthest_point"})
    if actual_gpcov and unaffected:
        log("sparse_use_actual_gpcov: only farthest_point measures distances with the kernel (gap_fit uses it for "
            f"cluster and covariance, which pargap does not have); no effect on sparse_method {', '.join(unaffected)}")
    models = []
    for j, (descriptor, kernel, g, gap_index) in enumerate(expanded):
        pool = descriptor_pools(structures, [expanded[j]])[0]
        if g.add_species and comm.allreduce(len(pool.x)) == 0:
            log(f"{name} {j} ({_label(descriptor, ('Z',))}): no descriptors in the data, dropped")
            continue
        k = len(models)
        where = f"{name} {k} ({_label(descriptor, ('Z', 'species'))})"
        if g.theta_fac is not None:
            kernel = make_kernel(g.covariance_type, dimension=descriptor.dimension, delta=g.delta, f0=g.f0,
                                 theta=theta_from_range(comm, g, descriptor, pool))
        if g.config_type_n_sparse:
            types = {s.index: s.config_type for s in structures}
            pool = dataclasses.replace(pool, config_type=np.array([types[i] for i in pool.structure], dtype=object))
            pool = dataclasses.replace(pool, config_type=sparse_config_types(pool, g, known_types))
        x, w, ids = collective(comm, select_sparse, comm, pool, method=g.sparse_method, n_sparse=g.n_sparse,
                               seed=seed + k, sparse_file=g.sparse_file, where=where,
                               config_type_n_sparse=g.config_type_n_sparse,
                               tolerances=(g.unique_descriptor_tolerance, g.unique_hash_tolerance),
                               kernel=kernel if actual_gpcov and g.sparse_method == "farthest_point" else None)
        n_descriptors = comm.allreduce(len(pool.x))
        del pool
        models.append(Model(descriptor, kernel, x, w, gap_index=gap_index))
        if print_sparse_index and g.print_sparse_index:
            collective(comm, append_sparse_index, comm, g.print_sparse_index, ids)
        log(f"{where}: {len(x)} sparse points by {g.sparse_method}")
        log.verbose(f"{where}: {n_descriptors} descriptors of dimension {descriptor.dimension}; "
                    f"kernel {kernel.name} " + ", ".join(f"{key}={np.round(value, 6).tolist()}"
                                                         for key, value in kernel.params().items()))
    return models


def _label(descriptor, prefixes):
    return descriptor.name + " " + " ".join(
        f"{key}={value}" for key, value in descriptor.params().items() if key.startswith(prefixes))


def append_sparse_index(comm, path, ids):
    """Append 1-based descriptor indices to ``path`` as gap_fit's print_sparse_index does: one line,
    the indices separated by spaces (rank 0)."""
    if comm.Get_rank() == 0:
        try:
            with open(path, "a") as fh:
                fh.write(" ".join(str(i + 1) for i in ids) + "\n")
        except OSError as exc:
            raise PargapError(f"print_sparse_index: cannot write {path}: {exc}") from None
