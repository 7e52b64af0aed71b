"""Benchmark: an end-to-end fit of Zuo et al.'s silicon training set, pargap against gap_fit.

    bench/setup && .venv/bin/python bench/fit.py [--ranks 1 2] [--skip-gapfit]

2-body (20 uniform points) + SOAP (n_max=8, l_max=6, cutoff 5, atom_sigma 0.5, zeta 4, 1000 CUR
points, delta 1), default_sigma={0.003 0.1 0.05 0}, e0 average, on 9/10 of
zuo2020_mlip_benchmark/Si_train.xyz (examples/fetch.py); errors on the held-out tenth (every 10th
structure). gap_fit (QUIP's, wheel quippy-ase in bench/.venv, one OpenMP thread) is the baseline,
run in the same invocation; ratios are gap_fit / pargap (above 1: pargap better).
Published GAP test errors for this benchmark: 2.91 meV/atom, 0.07 eV/A (MAE).
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples"))
from fetch import fetch  # noqa: E402  examples/fetch.py: the data in the repository, unpacked into a cache
DATA = "zuo2020_mlip_benchmark/Si_train.xyz"
TWO_BODY = "distance_2b cutoff=5.0 cutoff_transition_width=1.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 n_sparse=20 sparse_method=uniform"
SOAP = ("soap n_max=8 l_max=6 cutoff=5.0 cutoff_transition_width=1.0 atom_sigma=0.5 zeta=4 delta=1.0 "
        "covariance_type=dot_product n_sparse=1000 sparse_method=cur_points")
COMMON = "default_sigma={0.003 0.1 0.05 0.0} e0_method=average energy_parameter_name=energy force_parameter_name=force sparse_jitter=1.0e-8 rnd_seed=1"


def split(folder):
    frames = ase.io.read(fetch(DATA), ":")
    train = [a for i, a in enumerate(frames) if i % 10 != 9]
    test = [a for i, a in enumerate(frames) if i % 10 == 9]
    ase.io.write(folder / "train.xyz", train, format="extxyz")
    ase.io.write(folder / "test.xyz", test, format="extxyz")
    return len(train), sum(map(len, train)), len(test)


def run_gapfit(folder):
    gap_fit = next((HERE / ".venv").glob("lib/python3*/site-packages/quippy/gap_fit"))
    line = f"at_file=train.xyz gap={{{TWO_BODY} : {SOAP}}} {COMMON} gp_file=gapfit.xml"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    subprocess.run([str(gap_fit), *line.split()], cwd=folder, check=True, env=env,
                   stdout=open(folder / "gapfit.log", "w"), stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # gap_fit is the first child
    out = subprocess.run([str(HERE / ".venv" / "bin" / "python"), str(HERE / "quip_errors.py"), "gapfit.xml",
                          "test.xyz", "energy", "force"], cwd=folder, check=True, capture_output=True, text=True)
    return seconds, peak_mb, json.loads(out.stdout)


def run_pargap(folder, ranks):
    gp = f"pargap{ranks}.h5"
    cmd = ["pargap-fit", "at_file=train.xyz", f"gap={{{TWO_BODY} : {SOAP}}}", *COMMON.split(), f"gp_file={gp}"]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), *cmd]
    start = time.perf_counter()
    # one argv token per option: a bare ':' would be mpirun's MPMD separator
    log = subprocess.run(cmd, cwd=folder, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    peak_mb = max(float(m) for m in re.findall(r"peak memory per rank max\s+([0-9.]+) MB", log))
    phases = {m[0]: float(m[1]) for m in re.findall(r"\[pargap\] (\w[\w ]*?)\s+([0-9.]+) s   peak", log)}
    out = subprocess.run(["pargap-eval", gp, "test.xyz", "--json", "--force-key", "force"], cwd=folder,
                         check=True, capture_output=True, text=True).stdout
    table = json.loads(out)["all"]
    errors = {"energy_mae": table["energy"]["mae"], "forces_mae": table["forces"]["mae"],
              "energy_rmse": table["energy"]["rmse"], "forces_rmse": table["forces"]["rmse"]}
    return seconds, peak_mb, errors, phases


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--skip-gapfit", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_train, atoms, n_test = split(folder)
        print(f"Si (Zuo et al. 2020): {n_train} training structures ({atoms} atoms), {n_test} held out")
        rows = []
        if not args.skip_gapfit:
            rows.append(("gap_fit, 1 core",) + run_gapfit(folder) + ({},))
        for r in args.ranks:
            rows.append((f"pargap, {r} rank(s)",) + run_pargap(folder, r))
        print(f"{'':18s} {'wall s':>8s} {'peak MB/rank':>13s} {'E MAE meV/at':>13s} {'F MAE eV/A':>11s}")
        for name, sec, mb, err, _ in rows:
            print(f"{name:18s} {sec:8.1f} {mb:13.0f} {1000 * err['energy_mae']:13.2f} {err['forces_mae']:11.4f}")
        for name, _, _, _, phases in rows:
            if phases:
                print(f"{name} phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
        if not args.skip_gapfit:
            g = rows[0]
            for name, sec, mb, _, _ in rows[1:]:
                print(f"ratio gap_fit/{name}: time {g[1] / sec:.2f}, peak memory {g[2] / mb:.2f}")


if __name__ == "__main__":
    main()
