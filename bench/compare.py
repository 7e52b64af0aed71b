"""Benchmark: the 1000 x 1000 SOAP similarity matrix of mixed rMD17 molecules with pargap-compare.

    .venv/bin/python bench/compare.py [--ranks 1 2] [--kernel average] [--per-file 100]

1000 structures: the first 100 of each of the ten rMD17 rmd17_*_train_01.extxyz files of examples/data
(aspirin ... uracil; 9 to 24 atoms, species H C N O). SOAP l_max=6 n_max=8 cutoff=5.0
atom_sigma=0.5 zeta=2 (one SOAP per centre species, D = 3697). Each run is
``mpirun -n P python -m pargap.cli.compare db.xyz -o K.h5``; reported: wall time of the whole
command, the phase times it logs (read, soap, kernel, write, max over ranks), time per pair
(wall / n^2, and kernel phase / number of distinct pairs n(n+1)/2), and the largest difference
between the matrices of different P (0 expected).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
from fetch import fetch  # noqa: E402  examples/fetch.py: the data in the repository, unpacked into a cache
MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
             "salicylic", "toluene", "uracil")
SOAP = "l_max=6 n_max=8 cutoff=5.0 atom_sigma=0.5 zeta=2"


def database(folder, per_file):
    frames = []
    for molecule in MOLECULES:
        frames.extend(ase.io.read(fetch(f"rmd17/rmd17_{molecule}_train_01.extxyz"), f":{per_file}", parallel=False))
    ase.io.write(folder / "db.xyz", frames, format="extxyz")
    return len(frames), sum(map(len, frames))


def run(folder, ranks, kernel, gamma, tile):
    out = folder / f"K{ranks}.h5"
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, "-m", "pargap.cli.compare",
           str(folder / "db.xyz"), "-o", str(out), "--soap", SOAP, "--kernel", kernel, "--gamma", str(gamma),
           "--tile", str(tile)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    phases = {m.group(1): float(m.group(2))
              for m in re.finditer(r"\[pargap\] (read|soap|kernel|write)\s+([0-9.]+) s", proc.stdout)}
    peak = max(float(m) for m in re.findall(r"peak memory per rank max\s+([0-9.]+) MB", proc.stdout))
    with h5py.File(out) as f:
        K = f["kernel"][:]
    return {"ranks": ranks, "wall_s": wall, "phases_s": phases, "peak_mb_per_rank": peak}, K


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--kernel", default="average", choices=("average", "rematch", "bestmatch"))
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--per-file", type=int, default=100)
    p.add_argument("--tile", type=int, default=100)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pargap-bench-compare-") as tmp:
        folder = Path(tmp)
        n, n_atoms = database(folder, args.per_file)
        print(f"[bench] {n} structures, {n_atoms} atoms; kernel {args.kernel}; soap {SOAP}", flush=True)
        results, matrices = [], {}
        for ranks in args.ranks:
            result, K = run(folder, ranks, args.kernel, args.gamma, args.tile)
            result["wall_per_pair_us"] = 1e6 * result["wall_s"] / n**2
            kernel_s = result["phases_s"].get("kernel", float("nan"))
            result["kernel_per_distinct_pair_us"] = 1e6 * kernel_s / (n * (n + 1) / 2)
            matrices[ranks] = K
            results.append(result)
            print(f"[bench] P={ranks}: {result['wall_s']:.1f} s wall ({result['wall_per_pair_us']:.1f} us/pair), "
                  f"phases {result['phases_s']}, kernel {result['kernel_per_distinct_pair_us']:.2f} us per "
                  f"distinct pair, peak {result['peak_mb_per_rank']:.0f} MB/rank", flush=True)
        first = matrices[args.ranks[0]]
        diff = max(float(np.max(np.abs(K - first))) for K in matrices.values())
        print(json.dumps({"structures": n, "atoms": n_atoms, "kernel": args.kernel, "soap": SOAP,
                          "runs": results, "max_difference_between_rank_counts": diff}, indent=1))


if __name__ == "__main__":
    main()
