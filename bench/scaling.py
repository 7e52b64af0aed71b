"""Benchmark: strong scaling of a full fit at P = 1, 2 and 4 ranks, against the --dry-run memory model.

    .venv/bin/python bench/scaling.py [--ranks 1 2 4] [--n-sparse 1000] [--json out.json]
    .venv/bin/python bench/scaling.py --model out.json     # docs/scaling.md's tables from a run
    .venv/bin/python bench/scaling.py --model measured     # ... from the costs measured before

Fit: Zuo et al.'s silicon training set (zuo2020_mlip_benchmark/Si_train.xyz of examples/fetch.py, all
214 structures), 2-body (20 uniform points) + SOAP (n_max 8, l_max 6, cutoff 5, zeta 4, CUR
points), as bench/fit.py. For every P: the --dry-run estimate of each rank's peak, then the fit
under mpirun; printed are the phase times (wall, max over ranks), the row-building CPU time per
rank and its imbalance, the parallel efficiency T_1 / (P T_P) of the row phase and of the whole
fit, the measured peak memory of every rank beside its estimate, and the coefficients' largest
relative difference from P = 1's. The machine has 2 cores: P = 4 is oversubscribed and only
checks correctness (its times say nothing). Also printed: the costs docs/scaling.md extrapolates
from (seconds per row x sparse point, QR GFLOP/s).
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
from fetch import fetch  # noqa: E402  examples/fetch.py: the data in the repository, unpacked into a cache
DATA = "zuo2020_mlip_benchmark/Si_train.xyz"
CORES = 2

SETTINGS = """
at_file = "{data}"
gp_file = "{gp}"
e0_method = "average"
default_sigma = [0.003, 0.1, 0.05, 0.0]
energy_parameter_name = "energy"
force_parameter_name = "force"
sparse_jitter = 1.0e-8
rnd_seed = 1
[[gap]]
descriptor = "distance_2b"
cutoff = 5.0
cutoff_transition_width = 1.0
covariance_type = "ard_se"
delta = 1.0
theta_uniform = 1.0
n_sparse = 20
sparse_method = "uniform"
[[gap]]
descriptor = "soap"
n_max = 8
l_max = 6
cutoff = 5.0
cutoff_transition_width = 1.0
atom_sigma = 0.5
zeta = 4
delta = 1.0
covariance_type = "dot_product"
n_sparse = {n_sparse}
sparse_method = "cur_points"
"""


def command(ranks, *args):
    cmd = [sys.executable, "-m", "pargap.cli.fit", *map(str, args)]
    return ["mpirun", "-n", str(ranks), "--oversubscribe", *cmd] if ranks > 1 else cmd


def dry_run(config, ranks):
    out = subprocess.run(command(1, config, "--dry-run", "--ranks", ranks), check=True, capture_output=True,
                         text=True).stdout
    table = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\s+\d+\s", line)]
    return {int(t[0]): {"rows": int(t[2]), "peak_mb": float(t[-1])} for t in table}, out


def fit(config, ranks, gp):
    start = time.perf_counter()
    run = subprocess.run(command(ranks, config, "--set", f"gp_file='{gp}'"), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"fit on {ranks} rank(s) failed:\n{run.stderr}")
    log = run.stdout
    phases = {m[0]: float(m[1]) for m in re.findall(r"\[pargap\] (\w[\w ]*?)\s+([0-9.]+) s   peak", log)}
    per_rank = re.search(r"peak memory per rank, measured/estimated MB: (.*)", log).group(1)
    peaks = {int(r): float(m) for r, m, _ in re.findall(r"(\d+): ([0-9.]+)/([0-9.]+)", per_rank)}
    busy = re.search(r"row building per rank \(CPU\): slowest ([0-9.]+) s, mean ([0-9.]+) s, imbalance ([0-9.-]+)%",
                     log)
    shape = re.search(r"K_NM: (\d+) rows x (\d+) sparse points", log)
    condition = float(re.search(r"condition estimate ([0-9.e+-]+)", log).group(1))
    return {"wall_s": seconds, "phases": phases, "peak_mb": peaks, "rows": int(shape.group(1)),
            "M": int(shape.group(2)), "condition": condition,
            "rows_cpu_slowest_s": float(busy.group(1)) if busy else phases.get("covariance rows"),
            "rows_cpu_mean_s": float(busy.group(2)) if busy else phases.get("covariance rows"),
            "rows_imbalance_pct": float(busy.group(3)) if busy else 0.0}


def alpha_of(path):
    import h5py

    with h5py.File(path, "r") as f:
        return np.concatenate([f["models"][k]["alpha"][()] for k in sorted(f["models"], key=int)])


MEASURED_COSTS = {"row_rate_s": 4.1e-7, "qr_gflops": 35.0}
"""docs/scaling.md's costs when no run is given: building rows, CPU s per (row x sparse point) per
rank (the P = 1 run of this benchmark); the QR's GFLOP/s per rank (bench/solve.py, idle machine)."""


def si_cells(N, M, D=253):
    """DataSizes of a database of N rows made of 64-atom Si cells (energy, 192 force and 6 virial
    components each; 64 SOAP descriptors of dimension D, 2,240 gradient rows), M CUR points."""
    from pargap.fitting.memory import DataSizes

    rows = 1 + 3 * 64 + 6
    n = int(np.ceil(N / rows))
    return DataSizes(n_atoms=np.full(n, 64.0), n_rows=np.full(n, float(rows)), cost=np.ones(n),
                     desc=np.full((1, n), 64.0), grad=np.full((1, n), 64.0 * 35), dims=[D], n_sparse=[M],
                     has_soap=True, sampled=n, names=["soap"], methods=["cur_points"])


def model_tables(measured, N=10**7, M=5 * 10**4, budget_gb=2.0, ranks=(64, 256, 512, 1024, 4096)):
    """Markdown tables of docs/scaling.md: per-rank memory (pargap.fitting.memory's plan, the one
    ``pargap-fit --dry-run`` prints, on a database of 64-atom Si cells), time and communication at
    N rows and M sparse points for each P, and the largest problem in ``budget_gb`` per rank."""
    from pargap.fitting import memory
    from pargap.linalg.factor import factor_bytes

    rate, gflops = measured["row_rate_s"], measured["qr_gflops"]
    budget = budget_gb * 2**30
    sizes = si_cells(N, M)
    gb = lambda b: b / 2**30  # noqa: E731
    n = M + 1
    out = ["| P | rows per rank | row block | one structure's transient | sparse points (every rank) "
           "| sparse-point phase | rows phase | solve phase | peak per rank, ScaLAPACK | peak, rank 0, TSQR "
           "| building rows | folds | QR flops / (2 N M^2) | QR | rows sent per rank (pdgemr2d) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for P in ranks:
        plan = memory.make_plan(sizes, P, "scalapack", memory_per_rank=budget)
        worst = max(range(P), key=lambda r: plan.estimates[r]["peak"])
        e = plan.estimates[worst]
        tsqr = memory.estimate(sizes, plan.parts[0].structures, 0, P, "tsqr", plan.block_rows)["peak"]
        per_rank = sizes.n_rows[list(plan.parts[worst].structures)].sum()
        grad = memory.gradient_bytes(64, [64], [64 * 35], [253], [M], [True])
        # every fold is a pdgeqrf of [R ; the P blocks]: 2 (P h) n^2 for the blocks and 4/3 n^3 to
        # re-factorise the (already triangular) R that pdgeqrf takes as dense
        folds = int(np.ceil(per_rank / plan.block_rows))
        flops = 2.0 * N * n**2 + folds * 4.0 / 3.0 * n**3
        out.append(f"| {P} | {per_rank:,.0f} | {plan.block_rows:,} rows, {plan.row_block_mb:.0f} MB | {gb(grad):.2f} GB "
                   f"| {gb(M * (253 + 1) * 8):.2f} GB | {e['sparse points'] / 1024:.2f} GB "
                   f"| {e['covariance rows'] / 1024:.2f} GB | {e['solve'] / 1024:.2f} GB | **{e['peak'] / 1024:.2f} GB** "
                   f"| {tsqr / 1024:.0f} GB | {N * M * rate / P:,.0f} s | {folds} | {flops / (2.0 * N * M**2):.2f} "
                   f"| {flops / (P * gflops * 1e9):,.0f} s | {gb(per_rank * n * 8):.1f} GB |")
    out += ["", f"| M | TSQR: rank 0's factor at the solve | ScaLAPACK: factor per rank at P = 64 / 512 / 4096 "
            f"| smallest P for N = {N:.0e} in {budget_gb:g} GB per rank (ScaLAPACK) |", "|---|---|---|---|"]
    for m in (1000, 5000, 10000, 20000, 50000, 100000):
        share = [factor_bytes("scalapack", m + 1, P) for P in (64, 512, 4096)]
        smallest = next((P for P in 2 ** np.arange(0, 17) if memory.make_plan(
            si_cells(N, m), int(P), "scalapack", memory_per_rank=budget).peak * memory.MB <= budget), None)
        out.append(f"| {m:,} | {gb(factor_bytes('tsqr', m + 1, 1)):.2f} GB | "
                   + " / ".join(f"{gb(b):.2f}" for b in share) + " GB | "
                   + (f"{smallest:,}" if smallest else "more than 65,536") + " |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="RUN.json", help="print docs/scaling.md's model tables from a run's --json "
                   "('measured': from the costs in MEASURED_COSTS)")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--n-sparse", type=int, default=1000, help="SOAP sparse points (default 1000)")
    p.add_argument("--data", help="training file (default: fetch.py's %s)" % DATA)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.model:
        measured = MEASURED_COSTS if args.model == "measured" else json.loads(Path(args.model).read_text())
        print(model_tables(measured))
        return
    args.data = args.data or str(fetch(DATA))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "fit.toml"
        config.write_text(SETTINGS.format(data=args.data, gp=folder / "gap.h5", n_sparse=args.n_sparse))
        for ranks in args.ranks:
            estimate, text = dry_run(config, ranks)
            if ranks == args.ranks[0]:
                print(text.splitlines()[0])
            result = fit(config, ranks, folder / f"gap{ranks}.h5")
            result["estimate_mb"] = {r: e["peak_mb"] for r, e in estimate.items()}
            result["alpha"] = alpha_of(folder / f"gap{ranks}.h5")
            results[ranks] = result
            print(f"P = {ranks}: {result['wall_s']:.1f} s wall", flush=True)

    base = results[args.ranks[0]]
    ref = base["alpha"]
    r0 = results[args.ranks[0]]
    N, M = r0["rows"], r0["M"]
    print(f"\n{N} rows x {M} sparse points, condition estimate {r0['condition']:.1e} (alpha agrees to about "
          f"1e-16 x that); machine: {CORES} cores shared with other jobs, so the wall "
          "times are noisy; P > 2 is oversubscribed (correctness only)")
    phases = [k for k in base["phases"] if k != "write"]
    print(f"{'P':>3s} " + " ".join(f"{k[:12]:>12s}" for k in phases) + f" {'total':>8s} {'rows CPU':>9s} "
          f"{'imbal.':>7s} {'eff.rows':>8s} {'eff.all':>8s} {'max |da|/|a|':>12s}")
    for ranks, r in results.items():
        total = sum(r["phases"].values())
        eff_rows = base["rows_cpu_mean_s"] / (ranks * r["rows_cpu_slowest_s"]) * args.ranks[0]
        eff_all = sum(base["phases"].values()) / (ranks * total) * args.ranks[0]
        diff = np.max(np.abs(r["alpha"] - ref)) / np.max(np.abs(ref))
        r.update(total_s=total, efficiency_rows=eff_rows, efficiency_total=eff_all, alpha_rel_diff=float(diff))
        note = "" if ranks <= CORES else "  (oversubscribed)"
        print(f"{ranks:3d} " + " ".join(f"{r['phases'].get(k, 0):12.2f}" for k in phases)
              + f" {total:8.2f} {r['rows_cpu_slowest_s']:9.2f} {r['rows_imbalance_pct']:6.1f}% {eff_rows:8.2f} "
              f"{eff_all:8.2f} {diff:12.1e}{note}")
    print("\npeak memory per rank, measured / --dry-run estimate (MB):")
    for ranks, r in results.items():
        pairs = [f"rank {k}: {m:.0f} / {e:.0f} ({m / e:.2f})"
                 for k in sorted(r["peak_mb"]) for m, e in [(r["peak_mb"][k], r["estimate_mb"][k])]]
        print(f"  P = {ranks}: " + ", ".join(pairs))
    rate = base["rows_cpu_mean_s"] * args.ranks[0] / (N * M)
    solve = base["phases"].get("solve", float("nan"))
    gflops = (2 * N * (M + 1) ** 2 - 2 * (M + 1) ** 3 / 3) / solve / 1e9
    print(f"\ncosts for docs/scaling.md (P = {args.ranks[0]}): building rows {rate:.2e} CPU s per row x sparse point; "
          f"QR {gflops:.1f} GFLOP/s per rank (solve phase, {solve:.2f} s)")
    if args.json:
        for r in results.values():
            r.pop("alpha")
        Path(args.json).write_text(json.dumps({"rows": N, "M": M, "row_rate_s": rate, "qr_gflops": gflops,
                                               "runs": results}, indent=1, default=float))


if __name__ == "__main__":
    main()
