"""pargap-convert: a potential from one file format to the other, chosen by the file names.

    pargap-convert potential.h5 potential.xml     # pargap HDF5 -> QUIP GAP XML (+ sparseX files)
    pargap-convert gap_fit.xml potential.h5       # QUIP GAP XML (gap_fit's) -> pargap HDF5

The XML is what quippy and LAMMPS (pair_style quip) read; see docs/lammps.md. It cannot carry the
GP factor (/gp) for predictive variances or charge models (an error says so). Serial; no MPI.
"""

import argparse
import sys

from pargap.cli.common import run
from pargap.version import __version__


def parser():
    p = argparse.ArgumentParser(
        prog="pargap-convert",
        description="Convert a potential between pargap's HDF5 and QUIP's GAP XML (gap_fit's gp_file), by "
        "extension: a name ending in .xml is GAP XML, anything else HDF5.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage, 3 internal.",
    )
    p.add_argument("input", help="potential to read (.h5 or .xml)")
    p.add_argument("output", help="potential to write (.xml: GAP XML plus one sparseX file per model beside "
                   "it; else HDF5)")
    p.add_argument("--version", action="version", version=f"pargap {__version__}")
    return p


def main(argv=None):
    args = parser().parse_args(argv)

    def body():
        from pargap.potential.potential import Potential, is_quip_xml

        potential = Potential.load(args.input)
        has_factor = False  # whether the input holds /gp; never read its M x M factor only to drop it
        if not is_quip_xml(args.input):
            import h5py

            with h5py.File(args.input, "r") as f:
                has_factor = "gp" in f
        label = potential.save(args.output)
        if is_quip_xml(args.output) and has_factor:
            print("note: the GP factor (/gp, predictive variances) has no place in GAP XML; keep the HDF5 file "
                  "for variances", flush=True)
        models = ", ".join(f"{m.descriptor.name} ({m.n_sparse})" for m in potential.models)
        print(f"wrote {args.output}: {len(potential.models)} models [{models}]", flush=True)
        if label:
            species = " ".join(str(z) for z in sorted(potential.e0))
            print(f"LAMMPS: pair_style quip; pair_coeff * * {args.output} \"Potential xml_label={label}\" <Z of "
                  f"each atom type, e.g. {species}>", flush=True)
        return 0

    from pargap.parallel import SerialComm

    return run(body, SerialComm())


if __name__ == "__main__":
    sys.exit(main())
