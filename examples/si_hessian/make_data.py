"""Data for the talk's silicon Hessian experiment, all from Stillinger-Weber (pargap.baselines.stillinger_weber).

    python make_data.py [OUT_DIR] [--amplitude 0.1] [--force-amplitude 0.1] [--seed 0]

Writes into OUT_DIR (default: the current folder):

    train_hessian.xyz  the 8-atom cubic diamond cell at SW's minimum (a = 5.431 A): its energy and
                       its 21 non-zero Hessian eigenvalues (eV/A^2) with their eigenvectors, in
                       gap_fit's keys (info n_hessian, hessian1..21; per-atom hessian1..21)
    train_forces.xyz   the same minimum with its energy only, plus one 8-atom cell with Gaussian
                       random displacements (--force-amplitude A per component) and its 24 force
                       components; they sum to zero for any translation-invariant model, so they
                       hold 21 independent numbers: the same count as the eigenvalues
    test_216.xyz       the 216-atom (3x3x3) cell with Gaussian random displacements of --amplitude A
                       per component, its SW energy and forces
    sparse_2b.txt      shared sparse points of both fits (gap_fit's sparse_file format: weight,
    sparse_3b.txt      then the descriptor), identical for the two fits so that only the data
                       differ: pair distances on a uniform grid 1.9 A .. cutoff; triplets drawn at
                       random from unlabelled displaced 8-atom cells (their descriptors only)
"""

import argparse
import os
import sys

import ase.io
import numpy as np

from pargap.descriptors.angle_3b import Angle3b
from pargap.descriptors.base import cutoff_function
from pargap.data.hessian import hessian_data
from pargap.baselines.stillinger_weber import StillingerWeber, diamond_cell

CUTOFF = 3.77118  # SW's a sigma (A): the GAP descriptors see the same neighbours as SW
TRANSITION = 0.5  # cosine switch-off width of the descriptors (A)
N_SPARSE_2B = 15
N_SPARSE_3B = 40


def displaced(atoms, amplitude, rng):
    """A copy with Gaussian displacements of standard deviation ``amplitude`` (A) per component."""
    moved = atoms.copy()
    moved.positions += rng.normal(0.0, amplitude, moved.positions.shape)
    return moved


def labelled(atoms, energy=True, forces=True):
    """A copy carrying SW's energy (info) and/or forces (array), without a calculator."""
    out = atoms.copy()
    probe = atoms.copy()
    probe.calc = StillingerWeber()
    if energy:
        out.info["energy"] = probe.get_potential_energy()
    if forces:
        out.arrays["forces"] = probe.get_forces()
    return out


def write_sparse(path, x, weight):
    """gap_fit's sparse_file: per point its weight, then its components, one number per line."""
    np.savetxt(path, np.column_stack([weight, x]).ravel(), fmt="%.17g")


def make_data(out=".", amplitude=0.1, force_amplitude=0.1, seed=0, n_sparse_2b=N_SPARSE_2B,
              n_sparse_3b=N_SPARSE_3B):
    """Write the five files into ``out``; returns {name: path}."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    minimum = diamond_cell()
    paths = {name: os.path.join(out, name) for name in
             ("train_hessian.xyz", "train_forces.xyz", "test_216.xyz", "sparse_2b.txt", "sparse_3b.txt")}

    hessian = hessian_data(minimum, StillingerWeber(), delta=1e-3)
    hessian.info["config_type"] = "hessian"
    ase.io.write(paths["train_hessian.xyz"], hessian, format="extxyz")

    force_cell = labelled(displaced(minimum, force_amplitude, rng), energy=False)
    force_cell.info["config_type"] = "forces"
    at_minimum = labelled(minimum, forces=False)
    at_minimum.info["config_type"] = "minimum"
    ase.io.write(paths["train_forces.xyz"], [at_minimum, force_cell], format="extxyz")

    test = labelled(displaced(diamond_cell(repeat=3), amplitude, rng))
    test.info["config_type"] = f"random_{amplitude:g}A"
    ase.io.write(paths["test_216.xyz"], test, format="extxyz")

    r = np.linspace(1.9, CUTOFF, n_sparse_2b)
    write_sparse(paths["sparse_2b.txt"], r[:, None], cutoff_function(r, CUTOFF, TRANSITION)[0])
    angle = Angle3b(cutoff=CUTOFF, cutoff_transition_width=TRANSITION)
    pool = [angle.compute(displaced(minimum, amplitude, rng)) for _ in range(4)]
    x = np.concatenate([d.x for d in pool])
    w = np.concatenate([d.weight for d in pool])
    pick = rng.choice(len(x), size=n_sparse_3b, replace=False)
    write_sparse(paths["sparse_3b.txt"], x[pick], w[pick])
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=".", help="output folder (default: current folder)")
    p.add_argument("--amplitude", type=float, default=0.1,
                   help="std. dev. of the random displacements of the 216-atom test cell, A (default 0.1)")
    p.add_argument("--force-amplitude", type=float, default=0.1,
                   help="std. dev. of the displacements of the force-training 8-atom cell, A (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = make_data(args.out, args.amplitude, args.force_amplitude, args.seed)
    print("wrote " + " ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
