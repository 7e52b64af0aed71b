"""Under mpirun: the log marginal likelihood (at the settings and rescaled) and the optimised
hyperparameters on all ranks; rank 0 saves them.

    mpirun -n K python likelihood_run.py settings.toml out.npz
"""

import sys

import numpy as np

from pargap.settings.config import load_toml
from pargap.fitting.likelihood import Likelihood, optimise
from pargap.parallel import world
from pargap.progress import Log

comm = world()
quiet = Log(comm, quiet=True)
settings = load_toml(sys.argv[1])
lik = Likelihood(settings, comm, quiet)
base = lik()
scaled = lik({0: 0.8}, np.array([0.2]), np.array([-0.3, 0.2, 0.0, 0.0]))
optimum = optimise(settings, comm, quiet, max_rebuilds=8)
if comm.Get_rank() == 0:
    np.savez(sys.argv[2], ranks=comm.Get_size(), base=base, scaled=scaled, best=optimum.log_likelihood,
             sigma=optimum.settings.default_sigma, delta=optimum.settings.gap[0].delta,
             theta=optimum.settings.gap[0].theta_uniform)
