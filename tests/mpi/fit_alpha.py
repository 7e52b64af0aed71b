"""Under mpirun: fit from a TOML file on all ranks and save alpha and the sparse points (rank 0).

    mpirun -n K python fit_alpha.py settings.toml out.npz
"""

import sys

import numpy as np

from pargap.settings.config import load_toml
from pargap.fitting.fit import fit
from pargap.parallel import world
from pargap.progress import Log

comm = world()
potential = fit(load_toml(sys.argv[1]), comm, Log(comm, quiet=True))
if comm.Get_rank() == 0:
    np.savez(sys.argv[2], alpha=potential.alpha, ranks=comm.Get_size(),
             **{f"sparse_x{k}": m.sparse_x for k, m in enumerate(potential.models)})
