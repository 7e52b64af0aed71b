"""Benchmark: SOAP values and position gradients, pargap against featomic, same structures, same run.

    bench/setup && .venv/bin/python bench/descriptors.py

Rattled cubic-diamond silicon cells of 64 and 512 atoms; n_max=8, l_max=6, cutoff 5 A (1 A
transition), atom_sigma 0.5. featomic's SoapPowerSpectrum runs in bench/.venv (its PyPI numpy
cannot share pargap's Debian stack) on one thread (RAYON_NUM_THREADS=1). Prints atoms per second
and the ratio pargap/featomic (above 1: pargap faster). The two SOAPs differ in their radial basis
(QUIP's equispaced Gaussians against featomic's GTOs), not in the size of the problem.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.build
import ase.io

from pargap.descriptors.soap import Soap

HERE = Path(__file__).resolve().parent
N_MAX, L_MAX, CUTOFF, SIGMA = 8, 6, 5.0, 0.5


def best_of(func, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    baseline_python = HERE / ".venv" / "bin" / "python"
    if not baseline_python.exists():
        sys.exit("run bench/setup first (it installs featomic into bench/.venv)")
    soap = Soap(cutoff=CUTOFF, cutoff_transition_width=1.0, l_max=L_MAX, n_max=N_MAX, atom_sigma=SIGMA,
                n_species=1, species_Z=[14], Z=14)
    print(f"SOAP n_max={N_MAX} l_max={L_MAX} cutoff={CUTOFF} atom_sigma={SIGMA}; atoms per second (best of runs)")
    print(f"{'cell':>6s} {'what':>10s} {'pargap':>10s} {'featomic':>10s} {'ratio':>7s}")
    for reps, repeats in (((2, 2, 2), 5), ((4, 4, 4), 2)):
        atoms = ase.build.bulk("Si", "diamond", a=5.43, cubic=True) * reps
        atoms.rattle(0.05, seed=1)
        n = len(atoms)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cell.xyz"
            ase.io.write(path, atoms)
            env = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
            out = subprocess.run([str(baseline_python), str(HERE / "featomic_soap.py"), str(path), str(N_MAX),
                                  str(L_MAX), str(CUTOFF), str(SIGMA), str(repeats)],
                                 check=True, capture_output=True, text=True, env=env).stdout
        featomic = json.loads(out)
        soap.compute(atoms, gradients=True)  # warm-up (compilation, caches)
        mine = {"values": best_of(lambda: soap.compute(atoms), repeats),
                "gradients": best_of(lambda: soap.compute(atoms, gradients=True), repeats)}
        for what in ("values", "gradients"):
            p, f = n / mine[what], n / featomic[what]
            print(f"{n:>6d} {what:>10s} {p:>10.0f} {f:>10.0f} {p / f:>7.2f}")


if __name__ == "__main__":
    main()
