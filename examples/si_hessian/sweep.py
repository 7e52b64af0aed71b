"""The experiment over displacement amplitudes and random seeds, as a Markdown table.

    python sweep.py [--amplitudes 0.05 0.1 0.2] [--force-amplitudes 0.01 0.05 0.1] [--seeds 5]
                    [--set gap.0.theta_uniform=1.0 ...]

For every test amplitude (216-atom cell) and force-training amplitude (8-atom cell), runs
make_data.py with seeds 0..n-1, fits both GAPs with the example's TOML files (plus ``--set``
overrides, as pargap-fit's), and prints the force RMSE (eV/A, mean +- std. dev. over seeds) of
the zero-force model, SW's harmonic forces -H u, the Hessian-taught and the force-taught GAP,
and the force-taught GAP's eigenvalue RMSE (eV/A^2). Work files go to a temporary folder.
About 1.5 s per (amplitude, force amplitude, seed) on one core.
"""

import argparse
import os
import sys
import tempfile

import ase.io
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from make_data import make_data  # noqa: E402
from report import report  # noqa: E402

from pargap.baselines.stillinger_weber import StillingerWeber, diamond_cell  # noqa: E402
from pargap.data.hessian import finite_difference_hessian  # noqa: E402
from pargap.fitting.fit import fit  # noqa: E402
from pargap.fitting.output import write_potential  # noqa: E402
from pargap.parallel import SerialComm  # noqa: E402
from pargap.progress import Log  # noqa: E402
from pargap.settings.config import load_toml  # noqa: E402


def run_fits(folder, overrides=()):
    """Both fits in ``folder`` (which holds make_data.py's files); returns report()'s dict."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for name in ("hessian", "forces"):
            settings = load_toml(os.path.join(HERE, f"fit_{name}.toml"), list(overrides))
            write_potential(SerialComm(), fit(settings, log=Log(SerialComm(), quiet=True)), settings.gp_file)
        return report(".", harmonic=False)
    finally:
        os.chdir(cwd)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amplitudes", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--force-amplitudes", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    ideal = diamond_cell(repeat=3)
    H = finite_difference_hessian(ideal, StillingerWeber(), delta=1e-3)
    ms = lambda a: f"{np.mean(a):.3f} ± {np.std(a):.3f}"  # noqa: E731
    if args.set:
        print("overrides: " + " ".join(args.set) + "\n")
    print("| test amplitude (A) | force-cell amplitude (A) | zero forces | SW harmonic -H u | "
          "Hessian-taught GAP | force-taught GAP | force-taught eigenvalue RMSE |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="si_hessian_sweep_") as tmp:
        for amplitude in args.amplitudes:
            for force_amplitude in args.force_amplitudes:
                rows = []
                for seed in range(args.seeds):
                    folder = os.path.join(tmp, f"{amplitude}_{force_amplitude}_{seed}")
                    make_data(folder, amplitude, force_amplitude, seed)
                    r = run_fits(folder, args.set)
                    test = ase.io.read(os.path.join(folder, "test_216.xyz"))
                    u = test.positions - ideal.positions
                    harmonic = -(H @ u.ravel()).reshape(-1, 3) - test.arrays["forces"]
                    rows.append((r["test"]["zero_model_rmse"], np.sqrt(np.mean(harmonic**2)),
                                 r["hessian"]["forces"]["rmse"], r["forces"]["forces"]["rmse"],
                                 r["forces"]["eigenvalue_rmse"]))
                c = np.array(rows).T
                print(f"| {amplitude:g} | {force_amplitude:g} | {ms(c[0])} | {ms(c[1])} | {ms(c[2])} | "
                      f"{ms(c[3])} | {ms(c[4])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
