"""The numba cache is node-local and per user, never in the install directory."""

import os
import subprocess
import sys
from pathlib import Path

import pargap

PROBE = """
import numpy as np
from pargap.descriptors import _soap_kernels
from pargap.gp import _contract
print(_soap_kernels.density_coefficients._cache._cache_path)
print(_contract.accumulate_rows._cache._cache_path)
"""


def cache_paths(env):
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return [Path(p) for p in run.stdout.split()]


def test_kernels_cache_under_tmpdir_keyed_by_user(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"TMPDIR": str(tmp_path)}
    install = Path(pargap.__file__).resolve().parent
    for path in cache_paths(env):
        assert path.is_relative_to(tmp_path / f"pargap-numba-{os.getuid()}")
        assert not path.is_relative_to(install)


def test_numba_cache_dir_set_by_the_user_wins(tmp_path):
    env = dict(os.environ) | {"NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    assert all(p.is_relative_to(tmp_path / "mine") for p in cache_paths(env))
