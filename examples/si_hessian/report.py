"""Errors of the Hessian-taught and force-taught GAPs against Stillinger-Weber.

    python report.py [DATA_DIR] [--json]

Reads gap_hessian.h5, gap_forces.h5, test_216.xyz and train_hessian.xyz from DATA_DIR (default:
the current folder) and prints, for each fit, the force RMSE and MAE (eV/A) on the 216-atom cell
with randomised positions, beside a zero-force model (the RMS of SW's forces) and SW's own harmonic
forces -H u (H: SW's Hessian of the perfect 216-atom cell, u: the displacements; the best a model
that knows only the exact curvature at the minimum could do), and the 21 Hessian eigenvalues of
the 8-atom minimum (eV/A^2) from each fit beside SW's.
"""

import argparse
import json
import os
import sys

import ase.io
import numpy as np

from pargap.potential.calculator import GAPCalculator
from pargap.data.hessian import finite_difference_hessian
from pargap.baselines.stillinger_weber import StillingerWeber, diamond_cell

FITS = ("hessian", "forces")


def force_errors(potential, test):
    """{rmse, mae, max} of the potential's forces against the structure's (eV/A)."""
    atoms = test.copy()
    atoms.calc = GAPCalculator(potential)
    diff = atoms.get_forces() - test.arrays["forces"]
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff))),
            "max": float(np.abs(diff).max())}


def eigenvalues(potential, minimum, delta=1e-3):
    """The 3n - 3 largest eigenvalues of the potential's finite-difference Hessian (eV/A^2)."""
    H = finite_difference_hessian(minimum, GAPCalculator(potential), delta)
    return np.linalg.eigvalsh(H)[3:]


def harmonic_forces(test):
    """SW's harmonic forces -H u on the test cell, u its displacements from the perfect 3x3x3
    diamond cell (eV/A); None if the test cell is not such a cell."""
    ideal = diamond_cell(repeat=3)
    if len(test) != len(ideal) or not np.allclose(test.cell[:], ideal.cell[:]):
        return None
    u = test.positions - ideal.positions
    H = finite_difference_hessian(ideal, StillingerWeber(), delta=1e-3)
    return -(H @ u.ravel()).reshape(-1, 3)


def report(folder=".", harmonic=True):
    """The errors as a dict; ``harmonic=False`` skips SW's harmonic forces (a 216-atom Hessian)."""
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    test = ase.io.read(path("test_216.xyz"))
    minimum = ase.io.read(path("train_hessian.xyz"))
    reference = np.sort([minimum.info[f"hessian{k}"] for k in range(1, minimum.info["n_hessian"] + 1)])
    forces = test.arrays["forces"]
    out = {"test": {"atoms": len(test), "config_type": test.info.get("config_type"),
                    "zero_model_rmse": float(np.sqrt(np.mean(forces**2)))},
           "sw_eigenvalues": reference.tolist()}
    harmonic = harmonic_forces(test) if harmonic else None
    if harmonic is not None:
        out["test"]["harmonic_rmse"] = float(np.sqrt(np.mean((harmonic - forces) ** 2)))
    for name in FITS:
        potential = path(f"gap_{name}.h5")
        values = eigenvalues(potential, minimum)
        out[name] = {"forces": force_errors(potential, test), "eigenvalues": values.tolist(),
                     "eigenvalue_rmse": float(np.sqrt(np.mean((values - reference) ** 2))),
                     "eigenvalue_max_error": float(np.abs(values - reference).max())}
    return out


def format_report(r):
    lines = [f"216-atom cell ({r['test']['config_type']}): force errors against Stillinger-Weber, eV/A",
             f"  {'model':28s} {'RMSE':>8s} {'MAE':>8s} {'max':>8s}",
             f"  {'zero forces':28s} {r['test']['zero_model_rmse']:8.4f}"]
    if "harmonic_rmse" in r["test"]:
        lines.append(f"  {'SW harmonic, -H u':28s} {r['test']['harmonic_rmse']:8.4f}")
    for name in FITS:
        e = r[name]["forces"]
        lines.append(f"  {'GAP taught ' + name:28s} {e['rmse']:8.4f} {e['mae']:8.4f} {e['max']:8.4f}")
    lines.append("Hessian eigenvalues of the 8-atom minimum, eV/A^2 (SW | Hessian-taught | force-taught)")
    for k, (sw, h, f) in enumerate(zip(r["sw_eigenvalues"], r["hessian"]["eigenvalues"], r["forces"]["eigenvalues"]), 1):
        lines.append(f"  {k:2d} {sw:9.4f} {h:9.4f} {f:9.4f}")
    lines.append(f"  eigenvalue RMSE: Hessian-taught {r['hessian']['eigenvalue_rmse']:.4f}, "
                 f"force-taught {r['forces']['eigenvalue_rmse']:.4f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=".")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = report(args.folder)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
