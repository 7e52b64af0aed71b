"""Energies, forces and virials of a GAP XML potential with QUIP's own reader (quippy).

    bench/.venv/bin/python tests/quippy_eval.py gp.xml structures.npz out.npz

Runs in the side venv of bench/setup (quippy-ase from PyPI), never in pargap's: the test suite
calls it in a subprocess. structures.npz holds numbers_<k>, positions_<k>, cell_<k>, pbc_<k>
(binary, so that positions arrive to the last bit: extended XYZ rounds them to 1e-8 A). Writes per
structure energy (eV), forces (n, 3) eV/A, virial (3, 3) eV (-stress x volume; periodic cells)
as arrays energy_<k>, forces_<k>, virial_<k>.
"""

import os
import sys

from ase import Atoms
import numpy as np
from quippy.potential import Potential


def main(xml, structures, out):
    pot = Potential(param_filename=xml)  # QUIP finds the sparseX files beside the XML
    result = {}
    data = np.load(structures)
    for k in range(sum(1 for key in data.files if key.startswith("numbers_"))):
        atoms = Atoms(numbers=data[f"numbers_{k}"], positions=data[f"positions_{k}"], cell=data[f"cell_{k}"],
                      pbc=data[f"pbc_{k}"])
        atoms.calc = pot
        result[f"energy_{k}"] = atoms.get_potential_energy()
        result[f"forces_{k}"] = atoms.get_forces()
        if atoms.cell.rank == 3:
            result[f"virial_{k}"] = -atoms.get_stress(voigt=False) * atoms.get_volume()
    np.savez(out, **result)


if __name__ == "__main__":
    main(*[os.path.abspath(a) for a in sys.argv[1:4]])
