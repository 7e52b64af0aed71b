"""Benchmark: time per MD step (energy + forces) of GAPCalculator against quippy, same potential.

    bench/setup && .venv/bin/python bench/predict.py [--atoms 64 216 512 1000 4096] [--sparse 1000 10000]

The potential: a silicon GAP-18-like 2b + SOAP model (distance_2b cutoff 5, 20 points, ard_se;
SOAP n_max=8 l_max=8 cutoff=5 atom_sigma=0.5, dot_product zeta=4, D = 325) whose M SOAP sparse
points are the descriptors of rattled diamond cells (random coefficients: the numbers, not the
physics, are timed). It is written as HDF5 for pargap and as QUIP XML (pargap's writer) for quippy
(quippy-ase in bench/.venv, run in a subprocess by bench/quippy_md_step.py). Structures: rattled
diamond supercells of 64 to 4,096 atoms. Each step moves the atoms a little and asks for energy and
forces; reported: CPU seconds per step (process time, best of the repeats: the machine may be
shared, and each engine runs one thread: OMP, OpenBLAS, numba), per atom, and quippy / pargap
(above 1: pargap faster), plus the largest energy and force differences between the two engines.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase.build import bulk  # noqa: E402

HERE = Path(__file__).resolve().parent
SOAP = dict(cutoff=5.0, cutoff_transition_width=1.0, l_max=8, n_max=8, atom_sigma=0.5, n_species=1,
            species_Z=[14], Z=14)


def supercell(n_atoms, seed):
    reps = round((n_atoms / 8) ** (1 / 3))
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((reps, reps, reps))
    if len(atoms) != n_atoms:
        sys.exit(f"--atoms {n_atoms}: diamond supercells have 8 n^3 atoms")
    atoms.rattle(0.1, seed=seed)
    return atoms


def make_potential(M, seed=0):
    """2b (20 points) + SOAP (M points from rattled 64-atom cells) with random coefficients."""
    from pargap.descriptors import Distance2b
    from pargap.descriptors.soap import Soap
    from pargap.gp.kernels import DotProduct, SquaredExponential
    from pargap.gp.model import Model
    from pargap.potential.potential import Potential

    rng = np.random.default_rng(seed)
    soap = Soap(**SOAP)
    envs, k = [], 0
    while sum(map(len, envs)) < M:
        atoms = supercell(64, seed + 1000 + k)
        atoms.rattle(0.2, seed=k)
        envs.append(soap.compute(atoms).x)
        k += 1
    X = np.concatenate(envs)[:M]
    two = Distance2b(cutoff=5.0, cutoff_transition_width=1.0, Z1=14, Z2=14)
    r = np.linspace(1.8, 5.0, 20)[:, None]
    models = [
        Model(two, SquaredExponential(delta=1.0, theta=[1.0]), r,
              np.ones(20), rng.normal(scale=1e-2, size=20)),
        Model(soap, DotProduct(delta=1.0, zeta=4.0), X, np.ones(M), rng.normal(scale=1e-4, size=M)),
    ]
    return Potential(models, {14: -158.5})


def time_pargap(path, structures, repeats):
    from pargap.potential.calculator import GAPCalculator

    calc = GAPCalculator(str(path))
    out = []
    for atoms, r in zip(structures, repeats):
        atoms = atoms.copy()
        atoms.calc = calc
        best = np.inf
        for step in range(r + 1):  # the first step warms numba and the caches
            atoms.positions += 1e-4
            start = time.process_time()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            if step:
                best = min(best, time.process_time() - start)
        out.append({"seconds": best, "energy": energy, "forces": forces})
    return out


def time_quippy(xml, structures_file, repeats):
    python = HERE / ".venv" / "bin" / "python"
    if not python.exists():
        sys.exit("run bench/setup first (it installs quippy-ase into bench/.venv)")
    with tempfile.NamedTemporaryFile(suffix=".npz") as out:
        subprocess.run([str(python), str(HERE / "quippy_md_step.py"), str(xml), str(structures_file),
                        ",".join(map(str, repeats)), out.name], check=True, env=dict(os.environ))
        data = np.load(out.name)
        return [{"seconds": float(data[f"seconds_{k}"]), "energy": float(data[f"energy_{k}"]),
                 "forces": data[f"forces_{k}"]} for k in range(len(repeats))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--atoms", type=int, nargs="+", default=[64, 216, 512, 1000, 4096])
    p.add_argument("--sparse", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    structures = [supercell(n, seed=n) for n in args.atoms]
    repeats = [max(1, min(5, 2000 // n)) for n in args.atoms]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ase.io.write(tmp / "structures.xyz", structures, format="extxyz")
        structures = ase.io.read(tmp / "structures.xyz", ":")  # both engines see the same rounded positions
        for M in args.sparse:
            potential = make_potential(M)
            potential.save(tmp / f"M{M}.h5")
            potential.save(tmp / f"M{M}.xml")
            ours = time_pargap(tmp / f"M{M}.h5", structures, repeats)
            theirs = time_quippy(tmp / f"M{M}.xml", tmp / "structures.xyz", repeats)
            print(f"M = {M} SOAP sparse points (+ 20 2b), one thread each")
            print(f"{'atoms':>6} {'pargap s/step':>14} {'quippy s/step':>14} {'pargap us/atom':>15} "
                  f"{'quippy/pargap':>14} {'max|dE| eV':>11} {'max|dF| eV/A':>13}")
            for n, a, b in zip(args.atoms, ours, theirs):
                dE = abs(a["energy"] - b["energy"])
                dF = float(np.abs(a["forces"] - b["forces"]).max())
                print(f"{n:>6} {a['seconds']:>14.4f} {b['seconds']:>14.4f} {1e6 * a['seconds'] / n:>15.1f} "
                      f"{b['seconds'] / a['seconds']:>14.2f} {dE:>11.1e} {dF:>13.1e}", flush=True)
                results.append({"M": M, "atoms": n, "pargap_s": a["seconds"], "quippy_s": b["seconds"],
                                "ratio": b["seconds"] / a["seconds"], "max_dE": dE, "max_dF": dF})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
