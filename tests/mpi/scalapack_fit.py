"""Under mpirun: the same fit solved by TSQR and by ScaLAPACK (K_MM built and factorised
distributed) must give the same coefficients and condition estimate.

    mpirun -n P python scalapack_fit.py settings.toml

Prints the differences on rank 0; exits non-zero on every rank if they are too large."""

import dataclasses
import sys

import numpy as np

from pargap.settings.config import load_toml
from pargap.fitting.fit import fit
from pargap.parallel import world
from pargap.progress import Log

comm = world()
settings = load_toml(sys.argv[1])
got = {}
for solver in ("tsqr", "scalapack"):
    potential = fit(dataclasses.replace(settings, solver=solver), comm, Log(comm, quiet=True))
    got[solver] = potential.alpha, potential.provenance["condition_estimate"]
(a_tsqr, c_tsqr), (a_sl, c_sl) = got["tsqr"], got["scalapack"]
error = np.max(np.abs(a_sl - a_tsqr)) / np.max(np.abs(a_tsqr))
condition = abs(c_sl / c_tsqr - 1)
ok = error < 1e-8 and condition < 1e-6
if comm.Get_rank() == 0:
    print(f"ranks {comm.Get_size()}: M {len(a_tsqr)}, alpha relative difference {error:.2e}, "
          f"condition {c_sl:.6e} vs {c_tsqr:.6e}")
sys.exit(0 if comm.allreduce(int(ok)) == comm.Get_size() else 1)
