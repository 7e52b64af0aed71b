"""Errors of a gap_fit potential (GAP XML) on labelled structures, with quippy (run in bench/.venv).

    bench/.venv/bin/python bench/quip_errors.py gp.xml test.xyz ENERGY_KEY FORCE_KEY
Prints JSON {"energy_mae": eV/atom, "forces_mae": eV/A, "energy_rmse": ..., "forces_rmse": ...}."""

import json
import sys

import ase.io
import numpy as np
from quippy.potential import Potential

pot = Potential(param_filename=sys.argv[1])
e_err, f_err = [], []
for atoms in ase.io.read(sys.argv[2], ":"):
    stored = atoms.calc.results if atoms.calc is not None else {}  # newer ASE moves them there
    e_ref = atoms.info.get(sys.argv[3], stored.get(sys.argv[3], stored.get("energy")))
    f_ref = atoms.arrays.get(sys.argv[4], stored.get(sys.argv[4], stored.get("forces")))
    atoms.calc = pot
    e_err.append((atoms.get_potential_energy() - e_ref) / len(atoms))
    f_err.append((atoms.get_forces() - f_ref).ravel())
e, f = np.array(e_err), np.concatenate(f_err)
print(json.dumps({"energy_mae": float(np.abs(e).mean()), "energy_rmse": float(np.sqrt((e**2).mean())),
                  "forces_mae": float(np.abs(f).mean()), "forces_rmse": float(np.sqrt((f**2).mean()))}))
