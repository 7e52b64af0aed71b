"""featomic's SoapPowerSpectrum timed on the same structures as pargap (run in bench/.venv).

    bench/.venv/bin/python bench/featomic_soap.py STRUCTURES.xyz N_MAX L_MAX CUTOFF ATOM_SIGMA REPEATS
Prints JSON {"values": s, "gradients": s} (best of REPEATS, seconds for all structures)."""

import json
import sys
import time

import ase.io
import featomic

path, n_max, l_max, cutoff, sigma, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
frames = ase.io.read(path, ":")
calc = featomic.SoapPowerSpectrum(
    cutoff={"radius": cutoff, "smoothing": {"type": "ShiftedCosine", "width": 1.0}},
    density={"type": "Gaussian", "width": sigma},
    basis={"type": "TensorProduct", "max_angular": l_max, "radial": {"type": "Gto", "max_radial": n_max - 1}},
)
out = {}
for name, grads in (("values", []), ("gradients", ["positions"])):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        calc.compute(frames, gradients=grads)
        best = min(best, time.perf_counter() - start)
    out[name] = best
print(json.dumps(out))
