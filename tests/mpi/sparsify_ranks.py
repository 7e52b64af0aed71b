"""Sparse selection on however many ranks this runs on (test_sparsify_mpi).

    mpirun -n P python sparsify_ranks.py choice OUT.npz   # every method; rank 0 writes the picks
    mpirun -n P python sparsify_ranks.py memory OUT.npz   # CUR on wide descriptors; per-rank
                                                          # peak growth (bytes) during selection

The same synthetic descriptors for any P: structures are dealt to ranks by the balanced
partition, so each rank holds scattered runs of global descriptor numbers.
"""

import resource
import sys

import numpy as np
from mpi4py import MPI

from pargap.fitting.sparsify import DescriptorPool, select_sparse
from pargap.parallel import balanced_partition
from pargap.progress import peak_memory_mb

comm = MPI.COMM_WORLD
mode, out = sys.argv[1], sys.argv[2]


def descriptors(n_structures, per_structure, D, seed):
    """This rank's share of a data set with repeated rows (within and across structures) and a
    spectrum reaching 1e-9 of its largest singular value."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 2 * per_structure, n_structures)
    mine = balanced_partition(counts.tolist(), comm.Get_size())[comm.Get_rank()]
    xs, structure = [], []
    for s in range(n_structures):
        block = np.random.default_rng([seed, s]).normal(size=(counts[s], D)) * np.logspace(0, -9, D)
        block[-1] = block[0]  # repeated within a structure
        if s % 7 == 3:
            block[0] = np.random.default_rng([seed, s - 1]).normal(size=(counts[s - 1], D))[0] * np.logspace(0, -9, D)
        if s in mine:
            xs.append(block)
            structure.append(np.full(counts[s], s))
    x = np.concatenate(xs) if xs else np.zeros((0, D))
    structure = np.concatenate(structure) if structure else np.zeros(0, dtype=np.int64)
    return DescriptorPool(x, np.linalg.norm(x, axis=1), structure)


def rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


if mode == "choice":
    pool = descriptors(300, 10, 6, seed=5)
    picks = {}
    for method in ("random", "uniform", "cur_points", "farthest_point", "none"):
        x, w, ids = select_sparse(comm, pool, method=method, n_sparse=40, seed=9, where=method)
        picks[method], picks[method + "_x"], picks[method + "_w"] = ids, x, w
    if comm.Get_rank() == 0:
        np.savez(out, **picks)
else:
    pool = descriptors(64, 40, 900, seed=1)
    comm.Barrier()
    before = rss_bytes()
    select_sparse(comm, pool, method="cur_points", n_sparse=50, seed=2)
    growth = peak_memory_mb() * 2**20 - before
    growth = comm.gather(growth, root=0)
    if comm.Get_rank() == 0:
        np.savez(out, growth=np.array(growth))
