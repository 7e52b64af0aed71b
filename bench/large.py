"""Benchmark: a large fit on one 2-core machine: the ten rMD17 molecules together, C/H/N/O SOAP.

    bench/large.py                          # print the plan: what each step runs (nothing is run)
    bench/large.py --fraction 0.25          # one pargap fit on 25% of the training part (resumable: one
    bench/large.py --fraction 0.5           #   result file per step in --out, a step already done is
    bench/large.py --fraction 1             #   skipped unless --again)
    bench/large.py --gapfit-dryrun          # gap_fit's own estimate for the 100% fit (dryrun=T)
    bench/large.py --gapfit                 # gap_fit on the largest fraction its estimate fits in
                                            #   --gapfit-budget GB (or --gapfit-fraction F)
    bench/large.py --report                 # the table of every step done so far

Data: the ten rMD17 training files (split 01, 1000 frames each, examples/fetch.py), 10,000
structures, 156,000 atoms. Every 10th frame of each molecule is held out for validation (1000
structures); the training part is the other 9000: 430,200 rows (energies and force components).
Each molecule is centred in a box with 10 A of vacuum (no periodicity; gap_fit
reads no energies from frames without a Lattice). A fraction f takes the first f of each molecule's training frames (nested subsets, the same mix
of molecules), so rows grow with f and the sparse points stay M = 10,000 (H 4000, C 4000, N 1000,
O 1000; the smallest fraction run, 25%, has more than enough N and O environments).

Model: one SOAP per centre species over species_Z = {1 6 7 8} (n_max 6, l_max 4, cutoff 3 A,
atom_sigma 0.5, zeta 4, dot product, CUR points), written once as a gap_fit command line that both
pargap-fit and gap_fit run. e0 per species from a least-squares fit of the training energies on
the composition (the molecules' compositions differ, so "average" would not do).

pargap runs with solver=tsqr (--solver): ``auto`` would follow this shared machine's free memory.
Printed per fraction (pargap, mpirun -n RANKS on this machine): rows, time of every phase, peak
memory per rank (measured, VmHWM) beside the --dry-run estimate, the GFLOP/s per core of row
building (kernel and kernel-gradient flops, 2 (n_desc + 3 n_grad) M_k D per model) and of the
solve (tpqrt folds 2 N (M+1)^2, tree merges and the prior 2/3 (M+1)^3 each) against DGEMM per core
measured in the same run, and validation MAE/RMSE (pargap-eval). gap_fit's line: its dryrun
estimate for 100%, and its time, peak memory and validation errors on the fraction it ran.
The full run (three fractions and gap_fit) takes about an hour of the whole machine.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))
from fetch import fetch  # noqa: E402  examples/fetch.py: the data in the repository, unpacked into a cache

MOLECULES = ("aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
             "salicylic", "toluene", "uracil")
SPECIES = {"H": 1, "C": 6, "N": 7, "O": 8}
N_SPARSE = {"H": 4000, "C": 4000, "N": 1000, "O": 1000}
SOAP = ("soap n_max={n_max} l_max={l_max} atom_sigma=0.5 cutoff=3.0 cutoff_transition_width=1.0 central_weight=1.0 "
        "n_species=4 species_Z={{{{1 6 7 8}}}} Z={Z} zeta=4 delta=0.5 covariance_type=dot_product "
        "n_sparse={n_sparse} sparse_method=cur_points add_species=F")
COMMON = ("default_sigma={{0.0002 0.003 0.05 0.0}} e0={{{e0}}} energy_parameter_name=energy "
          "force_parameter_name=forces sparse_jitter=1.0e-8 rnd_seed=1")
GAP_FIT_GLOB = "lib/python3*/site-packages/quippy/gap_fit"


def prepare(out, fraction):
    """train_F.xyz (the first F of each molecule's training frames) and validation.xyz in ``out``
    -> (train path, validation path, structures, atoms, rows)."""
    import ase.io

    train_path, validation_path = out / f"train_{fraction:g}.xyz", out / "validation.xyz"
    if not (train_path.exists() and validation_path.exists()):
        train, validation = [], []
        for name in MOLECULES:
            frames = ase.io.read(fetch(f"rmd17/rmd17_{name}_train_01.extxyz"), ":", format="extxyz")
            for atoms in frames:  # a box (pbc stays F): gap_fit ignores the energies of frames without a Lattice
                atoms.center(vacuum=10.0)
            held = [a for i, a in enumerate(frames) if i % 10 == 9]
            kept = [a for i, a in enumerate(frames) if i % 10 != 9]
            train += kept[:int(round(fraction * len(kept)))]
            validation += held
        ase.io.write(out / "tmp.xyz", train, format="extxyz")
        os.replace(out / "tmp.xyz", train_path)
        if not validation_path.exists():
            ase.io.write(out / "tmp.xyz", validation, format="extxyz")
            os.replace(out / "tmp.xyz", validation_path)
    n_structures, n_atoms = 0, 0
    for line in open(train_path):
        if line.strip().isdigit():
            n_structures += 1
            n_atoms += int(line)
    return train_path, validation_path, n_structures, n_atoms, n_structures + 3 * n_atoms


def fit_e0(train_path):
    """Per-species e0 (eV) by least squares of the energies on the atom counts."""
    import ase.io

    counts, energies = [], []
    for atoms in ase.io.iread(train_path, format="extxyz"):
        counts.append([np.sum(atoms.numbers == z) for z in SPECIES.values()])
        energies.append(atoms.get_potential_energy() if atoms.calc is not None else atoms.info["energy"])
    e0, *_ = np.linalg.lstsq(np.array(counts, float), np.array(energies), rcond=None)
    return dict(zip(SPECIES, e0))


def line(train_path, gp_file, e0, args):
    """The fit as gap_fit's command line (a list of key=value words), run by pargap-fit and gap_fit."""
    soaps = " : ".join(SOAP.format(n_max=args.n_max, l_max=args.l_max, Z=z, n_sparse=int(N_SPARSE[s] * args.sparse_scale))
                       for s, z in SPECIES.items())
    e0_text = ":".join(f"{s}:{v:.8f}" for s, v in e0.items())
    text = f"at_file={train_path} gap={{{soaps}}} {COMMON.format(e0=e0_text)} gp_file={gp_file}"
    words, depth, word = [], 0, ""
    for c in text:  # split on spaces outside braces: one key=value per word
        depth += (c == "{") - (c == "}")
        if c == " " and depth == 0:
            words.append(word)
            word = ""
        else:
            word += c
    return words + [word]


def dgemm_gflops(n=2000, repeats=3):
    """GFLOP/s of one core's DGEMM (numpy @, one BLAS thread under bin/env.sh) per CPU second, as
    row building and folding are timed (fair on a shared machine): best of ``repeats``."""
    a, b = np.random.default_rng(0).random((2, n, n))
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        a @ b
        best = min(best, time.process_time() - start)
    return 2.0 * n**3 / best / 1e9


def row_flops(train_path, words):
    """Flops of the kernel and kernel-gradient products of all rows: per model and structure
    2 (n_desc + 3 n_grad) M_k D (pargap.fitting.memory.sample_sizes measures a sample of structures)."""
    from pargap.cli.fit import settings_from_args
    from pargap.fitting.memory import sample_sizes

    settings = settings_from_args(argparse.Namespace(config=words, set=[]))
    sizes = sample_sizes(settings)
    return float(sum(2.0 * (sizes.desc[k].sum() + 3 * sizes.grad[k].sum()) * M_k * D
                     for k, (M_k, D) in enumerate(zip(sizes.n_sparse, sizes.dims))))


def run_logged(cmd, log_path, env=None):
    """Run ``cmd``, its output teed to ``log_path``; -> (output, seconds). Exits on failure."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    seconds = time.perf_counter() - start
    text = Path(log_path).read_text()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd[:6]))} ... failed (exit {proc.returncode}); log {log_path}:\n{text[-3000:]}")
    return text, seconds


def parse_fit_log(text):
    """Phases (seconds, peak MB max over ranks), row building / folding CPU seconds, the end-of-fit
    memory report (measured and estimated per rank), rows and M."""
    phases = {m.group(1).strip(): {"seconds": float(m.group(2)), "peak_mb": float(m.group(3))}
              for m in re.finditer(r"\[pargap\] (\w[\w .]*?)\s+([0-9.]+) s\s+peak memory per rank max\s+([0-9.]+) MB",
                                   text)}
    building = re.search(r"row building per rank \(CPU\): slowest ([0-9.]+) s, mean ([0-9.]+) s", text)
    folding = re.search(r"folding:? slowest ([0-9.]+) s", text)
    per_rank = re.search(r"peak memory per rank, measured/estimated MB: (.*)", text)
    pairs = re.findall(r"(\d+): ([0-9.]+)/([0-9.]+)", per_rank.group(1)) if per_rank else []
    rows = re.search(r"K_NM: (\d+) rows x (\d+) sparse points", text)
    return {
        "phases": phases,
        "building_cpu_slowest": float(building.group(1)) if building else None,
        "building_cpu_mean": float(building.group(2)) if building else None,
        "folding_slowest": float(folding.group(1)) if folding else None,
        "measured_mb": [float(m) for _, m, _ in pairs],
        "estimated_mb": [float(e) for _, _, e in pairs],
        "rows": int(rows.group(1)) if rows else None,
        "M": int(rows.group(2)) if rows else None,
    }


def run_pargap(out, fraction, args):
    train, validation, n_structures, n_atoms, n_rows = prepare(out, fraction)
    e0 = fit_e0(train)
    gp = out / f"pargap_{fraction:g}.h5"
    words = line(train, gp, e0, args)
    mpirun = ["mpirun", "--oversubscribe", "-n", str(args.ranks)] if args.ranks > 1 else []
    if os.geteuid() == 0 and mpirun:
        mpirun.insert(1, "--allow-run-as-root")
    pinned = ["--set", f"solver={args.solver}"]  # not auto: it would follow the shared machine's free memory
    fit = [*mpirun, sys.executable, "-m", "pargap.cli.fit", *words, *pinned]
    print(f"[large] pargap {fraction:g}: {n_structures} structures, {n_atoms} atoms, {n_rows} rows; "
          f"{' '.join(map(str, fit[:8]))} ... (log {out}/pargap_{fraction:g}.log)", flush=True)
    dgemm_before = dgemm_gflops()
    plan, _ = run_logged([sys.executable, "-m", "pargap.cli.fit", *words, *pinned, "--dry-run", "--ranks", str(args.ranks)],
                         out / f"dryrun_{fraction:g}.log")
    text, wall = run_logged(fit, out / f"pargap_{fraction:g}.log")
    dgemm_after = dgemm_gflops()
    log = parse_fit_log(text)
    evaluation, _ = run_logged([sys.executable, "-m", "pargap.cli.eval", str(gp), str(validation), "--json"],
                               out / f"eval_{fraction:g}.json")
    errors = json.loads(evaluation)["all"]
    M, n = log["M"], log["M"] + 1
    flops_rows = row_flops(train, words)
    flops_solve = 2.0 * log["rows"] * n**2 + (args.ranks - 1 + 1) * 2.0 / 3.0 * n**3
    solve_seconds = (log["folding_slowest"] or 0.0) + log["phases"]["solve"]["seconds"]
    result = {
        "fraction": fraction, "ranks": args.ranks, "structures": n_structures, "atoms": n_atoms,
        "rows": log["rows"], "M": M, "e0": e0, "wall_seconds": wall, **log,
        "dry_run_peak_mb": float(re.search(r"largest estimated peak per rank: (\d+) MB", plan).group(1)),
        "dgemm_gflops_per_core": [dgemm_before, dgemm_after],
        "row_gflops_per_core": flops_rows / 1e9 / (log["building_cpu_mean"] * args.ranks),
        "solve_gflops_per_core": flops_solve / 1e9 / (solve_seconds * args.ranks),
        "validation": {"energy_mae_mev_atom": 1000 * errors["energy"]["mae"],
                       "energy_rmse_mev_atom": 1000 * errors["energy"]["rmse"],
                       "forces_mae_mev_a": 1000 * errors["forces"]["mae"],
                       "forces_rmse_mev_a": 1000 * errors["forces"]["rmse"]},
        "command": " ".join(map(str, fit)),
    }
    return result


def gap_fit_binary():
    found = sorted((HERE / ".venv").glob(GAP_FIT_GLOB))
    if not found:
        sys.exit("gap_fit not found: run bench/setup first (quippy-ase in bench/.venv)")
    return found[0]


def measured(cmd, log_path, threads):
    """Run ``cmd`` as the only child of a fresh Python process -> (log text, seconds, peak RSS MB)."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "rc = subprocess.run(sys.argv[1:]).returncode; "
             "print(f'[measured] rc={rc} seconds={time.perf_counter() - t:.3f} "
             "peak_mb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}')")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    text, _ = run_logged([sys.executable, "-c", probe, *map(str, cmd)], log_path, env)
    m = re.search(r"\[measured\] rc=(-?\d+) seconds=([0-9.]+) peak_mb=([0-9.]+)", text)
    if m is None or m.group(1) != "0":
        sys.exit(f"{cmd[0]} failed; log {log_path}:\n{text[-3000:]}")
    return text, float(m.group(2)), float(m.group(3))


def run_gapfit_dryrun(out, args):
    """gap_fit dryrun=T on the 100% fit: its own memory estimate (per process), block and PEAK."""
    train, _, n_structures, n_atoms, n_rows = prepare(out, 1.0)
    words = line(train, out / "gapfit_dryrun.xml", fit_e0(train), args)
    text, seconds, peak = measured([gap_fit_binary(), *words, "dryrun=T"], out / "gapfit_dryrun.log", args.threads)
    block = text[text.find("Memory Estimate"):]
    block = block[:block.find("\n", block.find("PEAK")) if "PEAK" in block else len(block)]
    top = re.search(r"PEAK\s+([0-9.]+)\s*([KMGT]?B)", block)
    scale = {"B": 1e-9, "KB": 1e-6, "MB": 1e-3, "GB": 1.0, "TB": 1e3}
    return {"fraction": 1.0, "rows": n_rows, "seconds": seconds, "peak_mb": peak,
            "command": "gap_fit " + " ".join(map(str, words)) + " dryrun=T",
            "estimate_peak_gb": float(top.group(1)) * scale[top.group(2)] if top else None,
            "estimate": [ln.strip() for ln in block.splitlines() if ln.strip() and "=" not in ln],
            "n_times_m_gb": n_rows * sum(int(v * args.sparse_scale) for v in N_SPARSE.values()) * 8 / 1e9}


def run_gapfit(out, args, dryrun):
    fraction = args.gapfit_fraction
    if fraction is None:  # the largest of 1, 1/2, 1/4, ... whose gap_fit estimate (linear in N) fits the budget
        need = (dryrun.get("estimate_peak_gb") or 4 * dryrun["n_times_m_gb"]) if dryrun else np.inf
        fraction = 1.0
        while fraction * need > args.gapfit_budget and fraction > 1 / 64:
            fraction /= 2
    train, validation, n_structures, n_atoms, n_rows = prepare(out, fraction)
    xml = out / f"gapfit_{fraction:g}.xml"
    words = line(train, xml, fit_e0(train), args)
    print(f"[large] gap_fit {fraction:g}: {n_rows} rows, {args.threads} OpenMP thread(s)", flush=True)
    _, seconds, peak = measured([gap_fit_binary(), *words], out / f"gapfit_{fraction:g}.log", args.threads)
    errors, _ = run_logged([HERE / ".venv" / "bin" / "python", HERE / "quip_errors.py", xml, validation, "energy",
                            "forces"], out / f"gapfit_errors_{fraction:g}.json")
    e = json.loads(errors.splitlines()[-1])
    return {"fraction": fraction, "rows": n_rows, "seconds": seconds, "peak_mb": peak, "threads": args.threads,
            "command": f"OMP_NUM_THREADS={args.threads} gap_fit " + " ".join(map(str, words)),
            "validation": {"energy_mae_mev_atom": 1000 * e["energy_mae"], "energy_rmse_mev_atom": 1000 * e["energy_rmse"],
                           "forces_mae_mev_a": 1000 * e["forces_mae"], "forces_rmse_mev_a": 1000 * e["forces_rmse"]}}


def report(out):
    results = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("result_*.json"))}
    pargap = sorted((r for k, r in results.items() if k.startswith("result_pargap_")), key=lambda r: r["fraction"])
    print(f"\n[large] results in {out}")
    if pargap:
        print(f"{'fraction':>8s} {'rows':>8s} {'M':>6s} {'P':>3s} {'wall s':>8s} {'select s':>8s} "
              f"{'rows s':>8s} {'solve s':>8s} {'peak MB':>8s} {'est. MB':>8s} {'meas/est':>8s} "
              f"{'rows GF':>8s} {'solve GF':>8s} {'DGEMM GF':>8s} {'E meV/at':>9s} {'F meV/A':>8s}")
        for r in pargap:
            ph = r["phases"]
            select = sum(v["seconds"] for k, v in ph.items() if "descriptor" in k or "sparse" in k)
            peak, est = max(r["measured_mb"]), max(r["estimated_mb"])
            print(f"{r['fraction']:8g} {r['rows']:8d} {r['M']:6d} {r['ranks']:3d} {r['wall_seconds']:8.0f} {select:8.0f} "
                  f"{ph['covariance rows']['seconds']:8.0f} {ph['solve']['seconds']:8.0f} {peak:8.0f} {est:8.0f} "
                  f"{peak / est:8.2f} {r['row_gflops_per_core']:8.2f} {r['solve_gflops_per_core']:8.2f} "
                  f"{np.mean(r['dgemm_gflops_per_core']):8.2f} {r['validation']['energy_mae_mev_atom']:9.2f} "
                  f"{r['validation']['forces_mae_mev_a']:8.1f}")
        print("peak memory per rank (MB), measured/estimated, by rank: " + "; ".join(
            f"{r['fraction']:g}: " + ", ".join(f"{m:.0f}/{e:.0f}" for m, e in zip(r["measured_mb"], r["estimated_mb"]))
            for r in pargap))
        if len(pargap) > 1:
            base = pargap[0]
            print("flat in N: peak per rank / peak at the smallest fraction: " + ", ".join(
                f"{r['fraction']:g}: {max(r['measured_mb']) / max(base['measured_mb']):.2f} "
                f"(rows x{r['rows'] / base['rows']:.2f})" for r in pargap))
    dry = results.get("result_gapfit_dryrun")
    if dry:
        print(f"gap_fit dryrun=T for 100% ({dry['rows']} rows): its own estimate, PEAK {dry['estimate_peak_gb']} GB "
              f"per process (N x M x 8 = {dry['n_times_m_gb']:.1f} GB):")
        print("    " + "\n    ".join(dry["estimate"]))
    for key, r in results.items():
        if key.startswith("result_gapfit_") and key != "result_gapfit_dryrun":
            v = r["validation"]
            print(f"gap_fit on {r['fraction']:g} ({r['rows']} rows, {r['threads']} thread(s)): {r['seconds']:.0f} s, "
                  f"peak {r['peak_mb']:.0f} MB; validation E {v['energy_mae_mev_atom']:.2f} meV/atom, "
                  f"F {v['forces_mae_mev_a']:.1f} meV/A")
    if not results:
        print("(no step run yet)")
        return
    print("what was run (full commands and logs in the results folder):")
    for key, r in results.items():
        settings = r.get("settings", {})
        print(f"  {key}: fraction {r['fraction']:g}, {r['rows']} rows, M = {settings.get('M')}, SOAP n_max "
              f"{settings.get('n_max')} l_max {settings.get('l_max')}" + (f"; {r['command'][:160]} ..." if "command" in r else ""))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, action="append", help="run pargap on this fraction of the training part")
    p.add_argument("--gapfit-dryrun", action="store_true", help="gap_fit dryrun=T for the 100%% fit")
    p.add_argument("--gapfit", action="store_true", help="gap_fit on the largest fraction that fits the budget")
    p.add_argument("--gapfit-fraction", type=float, help="gap_fit on this fraction instead")
    p.add_argument("--gapfit-budget", type=float, default=8.0, help="GB gap_fit may use (default 8: a shared machine)")
    p.add_argument("--report", action="store_true", help="print the table of the steps done")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks of pargap (default 2: this machine's cores)")
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads of gap_fit (default 2)")
    p.add_argument("--solver", default="tsqr", help="pargap's solver (default tsqr: its three 0.8 GB triangles fit; "
                   "ScaLAPACK's folds would re-factorise R 106 times at 100%%)")
    p.add_argument("--n-max", dest="n_max", type=int, default=6)
    p.add_argument("--l-max", dest="l_max", type=int, default=4)
    p.add_argument("--sparse-scale", type=float, default=1.0,
                   help="scale the sparse points per species (1: M = 10,000; for a quick check, e.g. 0.05)")
    p.add_argument("--out", type=Path, default=HERE / "large_results", help="results folder (default bench/large_results)")
    p.add_argument("--again", action="store_true", help="re-run steps whose result file exists")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    M = sum(int(v * args.sparse_scale) for v in N_SPARSE.values())
    steps = [(f"pargap_{f:g}", f) for f in (args.fraction or [])]
    if args.gapfit_dryrun:
        steps.append(("gapfit_dryrun", None))
    if args.gapfit:
        steps.append(("gapfit", None))
    if not steps and not args.report:
        print(__doc__)
        print(f"[large] nothing run. Planned: M = {M} sparse points, SOAP n_max={args.n_max} l_max={args.l_max}, "
              f"pargap on {args.ranks} rank(s), gap_fit on {args.threads} thread(s); results in {args.out}")
        return 0
    for name, fraction in steps:
        path = args.out / f"result_{name}.json"
        if path.exists() and not args.again and name != "gapfit":
            print(f"[large] {name}: done before ({path}); --again to re-run")
            continue
        print(f"[large] running {name} (M = {M}) ...", flush=True)
        if name == "gapfit_dryrun":
            result = run_gapfit_dryrun(args.out, args)
        elif name == "gapfit":
            dry = args.out / "result_gapfit_dryrun.json"
            result = run_gapfit(args.out, args, json.loads(dry.read_text()) if dry.exists() else None)
            path = args.out / f"result_gapfit_{result['fraction']:g}.json"
        else:
            result = run_pargap(args.out, fraction, args)
        result["settings"] = {"n_max": args.n_max, "l_max": args.l_max, "M": M, "ranks": args.ranks}
        path.write_text(json.dumps(result, indent=1))
    report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
