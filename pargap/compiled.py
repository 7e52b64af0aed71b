"""numba, with its on-disk cache of compiled kernels in a node-local directory.

numba's default cache sits next to the source, in the install directory: every rank of every
node would write there at first use (a known race on shared file systems, and read-only installs
cannot cache at all). Unless NUMBA_CACHE_DIR is set, the cache goes to
``$TMPDIR/pargap-numba-<uid>`` (``/tmp`` without TMPDIR): local to the node, private to the user.
Ranks of one node share it; numba writes each entry to a temporary file and renames it.

Import numba through this module (``from pargap.compiled import numba``) before any
``@numba.njit(cache=True)``: the cache directory is read when a function is decorated.
"""

import os
import tempfile

import numba


def cache_directory():
    """The directory numba caches compiled kernels in, created if missing (mode 700)."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return chosen
    path = os.path.join(tempfile.gettempdir(), f"pargap-numba-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


numba.config.CACHE_DIR = cache_directory()

__all__ = ["numba", "cache_directory"]
