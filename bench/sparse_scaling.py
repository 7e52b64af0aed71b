"""Benchmark: per-rank memory and time of the sparse-point phase at P = 2 and P = 16 ranks.

    .venv/bin/python bench/sparse_scaling.py [--ranks 2 16] [--n-sparse 200] [--json out.json]

Fit: QUIP's SiC regression set (tests/data/quip_gapfit_regression/SiC.np1.xyz, 101 structures),
2-species SOAP (n_max = l_max = 10, cutoff 5, one model per centre species, 200 CUR points each).
For every P the whole fit runs under mpirun (P = 16 is oversubscribed on this 2-core machine:
its times are those of 16 processes sharing 2 cores). Printed per P: the descriptor and sparse-point phase's
wall time and how much it raised the per-rank peak, the per-rank peak of the whole fit (max over
ranks), and the ratio of each to the first P's (the baseline measured in the same run); then the
largest relative difference of the coefficients and whether the sparse points are identical.
Done when the ratio of the peaks is at most 1.1 with the same coefficients.
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "quip_gapfit_regression" / "SiC.np1.xyz"

SETTINGS = """
at_file = "{data}"
gp_file = "{gp}"
e0_method = "average"
default_sigma = [0.002, 0.1, 0.05, 0.0]
energy_parameter_name = "dft_energy"
force_parameter_name = "dft_force"
sparse_jitter = 1.0e-8
rnd_seed = 1
[[gap]]
descriptor = "soap"
n_max = 10
l_max = 10
cutoff = 5.0
cutoff_transition_width = 1.0
atom_sigma = 0.5
zeta = 4
delta = 1.0
covariance_type = "dot_product"
n_sparse = {n_sparse}
sparse_method = "cur_points"
"""


def fit(folder, ranks, n_sparse):
    gp = folder / f"P{ranks}.h5"
    config = folder / f"P{ranks}.toml"
    config.write_text(SETTINGS.format(data=DATA, gp=gp, n_sparse=n_sparse))
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, "-m", "pargap.cli.fit", str(config)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    phases = {m.group(1).strip(): (float(m.group(2)), float(m.group(3)), float(m.group(4)))
              for m in re.finditer(r"\[pargap\] (\w[\w ]*?)\s+([0-9.]+) s   peak memory per rank max\s+([0-9.]+) MB,"
                                   r" sum\s+[0-9.]+ MB, raised by ([0-9.]+) MB", proc.stdout)}
    peak = max(p[1] for p in phases.values())
    with h5py.File(gp) as f:
        models = sorted(f["models"], key=int)
        alpha = [f["models"][k]["alpha"][:] for k in models]
        sparse = [f["models"][k]["sparse_x"][:] for k in models]
    row = {"ranks": ranks, "sparse_seconds": phases["descriptors and sparse points"][0],
           "sparse_raised_mb": phases["descriptors and sparse points"][2], "peak_mb": peak,
           "phases": {k: {"seconds": v[0], "peak_mb": v[1], "raised_mb": v[2]} for k, v in phases.items()}}
    return row, alpha, sparse


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 16])
    p.add_argument("--n-sparse", type=int, default=200)
    p.add_argument("--json")
    args = p.parse_args()
    rows, alphas, sparses = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in args.ranks:
            row, alpha, sparse = fit(Path(tmp), ranks, args.n_sparse)
            rows.append(row)
            alphas.append(alpha)
            sparses.append(sparse)
            print(f"P = {ranks}: done", flush=True)
    base = rows[0]
    print("\n| P | per-rank peak (MB) | ratio | sparse-point phase (s) | raised per rank (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['ranks']} | {row['peak_mb']:.0f} | {row['peak_mb'] / base['peak_mb']:.2f} | "
              f"{row['sparse_seconds']:.1f} | +{row['sparse_raised_mb']:.0f} |")
    for row, alpha, sparse in zip(rows[1:], alphas[1:], sparses[1:]):
        diff = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(alpha, alphas[0]))
        same = all(np.array_equal(a, b) for a, b in zip(sparse, sparses[0]))
        row["alpha_rel_diff"], row["same_sparse_points"] = diff, same
        print(f"P = {row['ranks']} against P = {base['ranks']}: coefficients max rel. difference {diff:.1e}, "
              f"sparse points identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
