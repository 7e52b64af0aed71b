"""quippy's time per MD step (energy + forces) for bench/predict.py (run in bench/.venv).

    bench/.venv/bin/python bench/quippy_md_step.py gp.xml structures.xyz REPEATS out.npz

REPEATS: comma list, one per structure. Writes seconds_<k> (best step), energy_<k>, forces_<k>.
"""

import os
import sys
import time

import ase.io
import numpy as np
from quippy.potential import Potential


def main(xml, structures, repeats, out):
    pot = Potential(param_filename=xml)  # QUIP finds the sparseX files beside the XML
    result = {}
    for k, (atoms, r) in enumerate(zip(ase.io.read(structures, ":"), map(int, repeats.split(",")))):
        atoms.calc = pot
        best = np.inf
        for step in range(r + 1):
            atoms.positions += 1e-4
            start = time.process_time()
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            if step:
                best = min(best, time.process_time() - start)
        result |= {f"seconds_{k}": best, f"energy_{k}": energy, f"forces_{k}": forces}
    np.savez(out, **result)


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3], os.path.abspath(sys.argv[4]))
