"""Phase write: what the potential file records about its fit, and the file written once."""

import datetime
import os
import platform
import socket

from pargap.errors import PargapError
from pargap.parallel import collective
from pargap.version import __version__

STORE_COVARIANCE_MAX_M = 20000
"""Beyond this many sparse points the (M, M) factor for the predictive variance is not stored by
default (store_covariance = true forces it: M^2 * 4 bytes on disk, the upper triangle)."""


def provenance(comm, settings, seed, data_hash, **facts):
    """The provenance of a fit (the potential file's /provenance): version, date, host, ranks,
    the training file and its SHA-256, the seed, and ``facts`` of the fit (condition, rows...)."""
    return {
        "pargap_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "ranks": comm.Get_size(),
        "at_file": os.path.abspath(settings.at_file),
        "at_file_sha256": data_hash,
        "rnd_seed": seed,
    } | facts


def stores_variance(settings, M):
    """Whether the potential stores the (M, M) factor for the predictive variance: by
    store_covariance, else up to STORE_COVARIANCE_MAX_M sparse points, and never by default in a
    GAP XML gp_file (which has no place for it: the factor would be kept to the end for nothing)."""
    if settings.store_covariance is not None:
        return settings.store_covariance
    return M <= STORE_COVARIANCE_MAX_M and not settings.gp_file.lower().endswith(".xml")


def variance_factor(settings, solution, solver, log):
    """The (M, M) factor R (R^T R = A^T A) to store for the predictive variance, or None
    (:func:`stores_variance`); ScaLAPACK keeps none."""
    store = stores_variance(settings, len(solution.alpha))
    if store and solver == "scalapack":
        log("no predictive-variance factor (/gp) in the potential: the ScaLAPACK solver keeps R distributed "
            "(solver = \"tsqr\" keeps it, when its triangles fit on rank 0)")
    return solution.factor if store else None


def write_potential(comm, potential, path):
    """Rank 0 writes the file atomically; a failure there is raised on every rank."""
    def write():
        if comm.Get_rank() == 0:
            try:
                potential.save(path)
            except OSError as exc:
                raise PargapError(f"cannot write {path}: {exc}") from None

    collective(comm, write)
