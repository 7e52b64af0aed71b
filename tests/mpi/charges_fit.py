"""Under mpirun: fit a settings file with charge models on all ranks; rank 0 saves the charge
models' alpha (concatenated) and sparse points.

    mpirun -n K python charges_fit.py settings.toml out.npz
"""

import sys

import numpy as np

from pargap.settings.config import load_toml
from pargap.fitting.fit import fit
from pargap.parallel import world
from pargap.progress import Log

comm = world()
potential = fit(load_toml(sys.argv[1]), comm, Log(comm, quiet=True))
alpha = np.concatenate([m.alpha for m in potential.charge_models])
gathered = comm.allgather(alpha)
assert all(np.array_equal(a, alpha) for a in gathered), "ranks disagree on the charge coefficients"
if comm.Get_rank() == 0:
    np.savez(sys.argv[2], alpha=alpha, ranks=comm.Get_size(),
             **{f"sparse_x{k}": m.sparse_x for k, m in enumerate(potential.charge_models)})
