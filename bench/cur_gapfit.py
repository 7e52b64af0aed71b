"""Benchmark: held-out errors of CUR sparse points, pargap against gap_fit, over several seeds.

    .venv/bin/python bench/cur_gapfit.py [--seeds 1 2 3 4 5] [--l-max 12 --n-max 10] [--n-sparse 50]
    (needs bench/setup: gap_fit and quippy come from the quippy-ase wheel in bench/.venv)

GAP-18's own gap_fit command line (tests/data/si_gap18_subsets/README.md; SOAP l_max=12 n_max=10,
glue.xml core, GAP-18's sigmas, sparse_jitter, e0_offset) on a split of Si_tiny: every third
structure (1, 4, 7, ...) is held out, the rest (35 structures with the isolated atom) is the
training set. For each seed, gap_fit and pargap-fit run the same line with ``rnd_seed=seed``;
each potential is evaluated on the held-out structures (gap_fit's with quippy, pargap's with its
ASE calculator). CUR's draws differ between the codes (gfortran's RNG against numpy's Philox), so
the comparison is of the distributions over seeds: printed are the per-seed energy MAE (meV/atom)
and force MAE (eV/A), their means and standard deviations, and the ratio pargap / gap_fit of the
means (1 or below: pargap's points are as good). With --json, the numbers are also written there.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "si_gap18_subsets"
GAP_FIT = HERE / ".venv" / "bin" / "gap_fit"
QUIP_PYTHON = HERE / ".venv" / "bin" / "python"

LINE = ("at_file={train} gap={{soap l_max={l_max} n_max={n_max} atom_sigma=0.5 zeta=4 cutoff=5.0 "
        "cutoff_transition_width=1.0 central_weight=1.0 n_sparse={n_sparse} delta=3.0 f0=0.0 "
        "covariance_type=dot_product sparse_method=cur_points}} default_sigma={{0.001 0.1 0.05 0.0}} "
        "config_type_sigma={{liq:0.003:0.15:0.2:0.0:amorph:0.01:0.2:0.4:0.0:sp:0.01:0.2:0.4:0.0}} "
        "energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial "
        "config_type_parameter_name=config_type sparse_jitter=1.0e-8 e0_offset=2.0 "
        "core_param_file={glue} core_ip_args={{IP Glue}} gp_file={gp} rnd_seed={seed}")


def split(folder):
    """Training (two structures in three, and the isolated atom) and held-out files."""
    frames = ase.io.read(DATA / "Si_tiny.xyz", ":")
    held = [a for i, a in enumerate(frames) if i % 3 == 1 and len(a) > 1]
    train = [a for i, a in enumerate(frames) if not (i % 3 == 1 and len(a) > 1)]
    ase.io.write(folder / "train.xyz", train, format="extxyz")
    ase.io.write(folder / "test.xyz", held, format="extxyz")
    return len(train), len(held)


def arguments(folder, gp, seed, args):
    line = LINE.format(train=folder / "train.xyz", glue=DATA / "glue.xml", gp=gp, seed=seed,
                       l_max=args.l_max, n_max=args.n_max, n_sparse=args.n_sparse)
    # split on spaces outside braces: each key=value is one argument
    out, depth, word = [], 0, ""
    for c in line:
        depth += (c == "{") - (c == "}")
        if c == " " and depth == 0:
            out.append(word)
            word = ""
        else:
            word += c
    return out + [word]


def run(cmd, cwd):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def pargap_errors(gp, test):
    from pargap import GAPCalculator

    e, f = [], []
    for atoms in ase.io.read(test, ":"):
        e_ref, f_ref = atoms.info["dft_energy"], atoms.arrays["dft_force"]
        atoms.calc = GAPCalculator(str(gp))
        e.append((atoms.get_potential_energy() - e_ref) / len(atoms))
        f.append((atoms.get_forces() - f_ref).ravel())
    return {"energy_mae": float(np.abs(e).mean()), "forces_mae": float(np.abs(np.concatenate(f)).mean())}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    p.add_argument("--l-max", type=int, default=12)
    p.add_argument("--n-max", type=int, default=10)
    p.add_argument("--n-sparse", type=int, default=50)
    p.add_argument("--json")
    args = p.parse_args()
    if not GAP_FIT.exists():
        sys.exit("gap_fit not found: run bench/setup first")
    results = {"gap_fit": [], "pargap": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_train, n_test = split(folder)
        print(f"Si_tiny: {n_train} training structures, {n_test} held out; SOAP l_max={args.l_max} "
              f"n_max={args.n_max}, n_sparse={args.n_sparse} CUR points")
        for seed in args.seeds:
            gp = folder / f"gap_fit_{seed}.xml"
            run([GAP_FIT, *arguments(folder, gp, seed, args)], folder)
            quip = json.loads(run([QUIP_PYTHON, HERE / "quip_errors.py", gp, folder / "test.xyz", "dft_energy",
                                   "dft_force"], folder).strip().splitlines()[-1])
            results["gap_fit"].append({"seed": seed, "energy_mae": quip["energy_mae"], "forces_mae": quip["forces_mae"]})
            h5 = folder / f"pargap_{seed}.h5"
            run([sys.executable, "-m", "pargap.cli.fit", *arguments(folder, h5, seed, args)], folder)
            results["pargap"].append({"seed": seed, **pargap_errors(h5, folder / "test.xyz")})
            print(f"seed {seed}: " + "  ".join(
                f"{code} {r[-1]['energy_mae'] * 1e3:6.2f} meV/atom {r[-1]['forces_mae']:.4f} eV/A"
                for code, r in results.items()), flush=True)
    print("\n| fit | energy MAE (meV/atom) | force MAE (eV/A) |\n| --- | --- | --- |")
    mean = {}
    for code, rows in results.items():
        e = np.array([r["energy_mae"] for r in rows]) * 1e3
        f = np.array([r["forces_mae"] for r in rows])
        mean[code] = (e.mean(), f.mean())
        print(f"| {code} CUR, {len(rows)} seeds | {e.mean():.2f} +- {e.std(ddof=1) if len(e) > 1 else 0:.2f} "
              f"| {f.mean():.4f} +- {f.std(ddof=1) if len(f) > 1 else 0:.4f} |")
    ratio = [mean["pargap"][i] / mean["gap_fit"][i] for i in range(2)]
    print(f"\npargap / gap_fit (means): energy {ratio[0]:.3f}, forces {ratio[1]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
