"""pargap-eval: errors of a fitted potential on labelled structures.

    pargap-eval potential.h5 test.xyz [--json] [--energy-key ...]
"""

import argparse
import json
import sys
import tomllib

from pargap.cli.common import EXIT_ERROR, run, start_mpi


def parser():
    p = argparse.ArgumentParser(
        prog="pargap-eval",
        description="Energy (per atom), force and virial MAE/RMSE of a pargap potential on labelled "
        "structures, overall and per config type. Key names default to the ones the potential was fitted with.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 internal. Runs under mpirun too (structures are split over ranks).",
    )
    p.add_argument("potential", help="pargap potential file (HDF5)")
    p.add_argument("data", help="structures with reference energies/forces/virials (extended XYZ or any ASE format)")
    p.add_argument("--json", action="store_true", help="print the errors as JSON instead of a table")
    p.add_argument("--plot", metavar="DIR", help="write parity plots (energy, forces, virial, coloured by "
                   "config type) and error histograms as PNG files into DIR")
    for name in ("energy", "force", "virial", "stress", "config_type"):
        p.add_argument(f"--{name.replace('_', '-')}-key", dest=f"{name}_parameter_name", default=None,
                       help=f"key of the {name.replace('_', ' ')} (default: as in the fit)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    comm = start_mpi()
    if comm is None:
        return EXIT_ERROR

    def body():
        from pargap.analysis.evaluate import comparisons, error_table, format_table, parity_plots
        from pargap.errors import PargapError
        from pargap.fitting.structures import load_structures
        from pargap.parallel import collective, on_root
        from pargap.potential.potential import Potential
        from pargap.progress import Log
        from pargap.settings.config import settings_from_dict

        def load():
            potential = Potential.load(args.potential)
            data = tomllib.loads(potential.settings) if potential.settings else {}
            data["at_file"] = args.data
            for key in ("energy", "force", "virial", "stress", "config_type"):
                value = getattr(args, f"{key}_parameter_name")
                if value is not None:
                    data[f"{key}_parameter_name"] = value
            return potential, settings_from_dict(data)

        potential, settings = collective(comm, load)
        log = Log(comm, quiet=args.json)
        structures, _ = load_structures(comm, settings, log, check_sigma=False)
        local = collective(comm, comparisons, potential, structures, args.data)
        table = error_table(comm, local)
        if comm.Get_rank() == 0:
            print(json.dumps(table, indent=2) if args.json else format_table(table), flush=True)
        if args.plot:
            parts = comm.gather(local, root=0)

            def plots():
                try:
                    return parity_plots(args.plot, [item for part in parts for item in part])
                except (ImportError, OSError) as exc:
                    raise PargapError(f"--plot {args.plot}: {exc}") from None

            for path in on_root(comm, plots):
                log(f"wrote {path}")
        return 0

    return run(body, comm)


if __name__ == "__main__":
    sys.exit(main())
