"""Reference ESP data for the charge-model example: methanol, ethanol and acetone at HF/6-31G*.

For every molecule, a few conformers (torsions about one bond) times a few random perturbations
(Gaussian displacements, sigma 0.04 Angstrom) of ASE's g2 geometry; for every geometry a
restricted Hartree-Fock calculation (pyscf, 6-31G*) and its electrostatic potential

    Phi(r) = sum_A Z_A / |r - R_A| - int rho(r') / |r - r'| dr'      (atomic units, then volts)

on Merz-Kollman-style points: shells at 1.4, 1.6, 1.8 and 2.0 times the Bondi van der Waals
radii of each atom (Fibonacci points on each sphere, about DENSITY points per Angstrom^2),
keeping only points outside every atom's sphere of the same shell. Written as extended XYZ with
pargap's ESP convention (DESIGN.md section 6): info ``esp_points`` (3K, Angstrom, flattened
x1 y1 z1 x2 ...), ``esp_values`` (K, volts), ``total_charge`` (e, 0 here), ``config_type``
(molecule/conformer) and ``energy`` (the HF energy, eV; not used by the charge fit).

Run with the pyscf venv (setup.sh):  .venv/bin/python make_data.py [--out data]
"""

import argparse
import math
import os

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.io import write
from ase.units import Bohr, Hartree

BONDI = {"H": 1.20, "C": 1.70, "N": 1.55, "O": 1.52}
SHELLS = (1.4, 1.6, 1.8, 2.0)
DENSITY = 0.6  # points per Angstrom^2 on each shell, before removing buried points

# molecule: (g2 name, [(conformer name, bond (a, b), atoms rotated about a->b, angle in degrees)])
MOLECULES = {
    "methanol": ("CH3OH", [("staggered", None, None, 0.0), ("eclipsed", (0, 1), [3], 60.0)]),
    "ethanol": ("CH3CH2OH", [("trans", None, None, 0.0), ("gauche", (1, 2), [3], 120.0)]),
    "acetone": ("CH3COCH3", [("c2v", None, None, 0.0), ("methyl30", (1, 2), [4, 6, 7], 30.0)]),
}


def fibonacci_sphere(n):
    """n nearly uniform unit vectors (golden-angle spiral), (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    s = np.sqrt(1.0 - z**2)
    return np.column_stack([s * np.cos(phi), s * np.sin(phi), z])


def esp_points(atoms, shells=SHELLS, density=DENSITY):
    """Merz-Kollman-style points (K, 3) in Angstrom around the molecule."""
    radii = np.array([BONDI[s] for s in atoms.get_chemical_symbols()])
    out = []
    for scale in shells:
        R = scale * radii
        for a, (centre, r) in enumerate(zip(atoms.positions, R)):
            n = max(int(round(4.0 * math.pi * r**2 * density)), 8)
            pts = centre + r * fibonacci_sphere(n)
            d = np.linalg.norm(pts[:, None, :] - atoms.positions[None, :, :], axis=-1)
            outside = np.all(d >= R[None, :] - 1e-9, axis=1)
            out.append(pts[outside])
    return np.concatenate(out)


def rotate_group(atoms, bond, group, angle):
    """Rotate the atoms ``group`` about the axis through atoms bond[0] -> bond[1] by ``angle`` degrees."""
    atoms = atoms.copy()
    if bond is None:
        return atoms
    a, b = atoms.positions[bond[0]], atoms.positions[bond[1]]
    axis = (b - a) / np.linalg.norm(b - a)
    t = math.radians(angle)
    for i in group:
        v = atoms.positions[i] - b
        v_rot = (v * math.cos(t) + np.cross(axis, v) * math.sin(t)
                 + axis * np.dot(axis, v) * (1.0 - math.cos(t)))
        atoms.positions[i] = b + v_rot
    return atoms


def hf_esp(atoms, points, basis="6-31g*"):
    """HF energy (eV) and ESP (volts) at ``points`` (K, 3) Angstrom."""
    from pyscf import df, gto, scf

    mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis=basis, unit="Angstrom", charge=0, spin=0, verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    dm = mf.make_rdm1()
    pts_bohr = points / Bohr
    fake = gto.fakemol_for_charges(pts_bohr)
    v_elec = -np.einsum("ijp,ij->p", df.incore.aux_e2(mol, fake), dm)
    R = mol.atom_coords()  # Bohr
    dist = np.linalg.norm(pts_bohr[:, None, :] - R[None, :, :], axis=-1)
    v_nuc = (mol.atom_charges()[None, :] / dist).sum(1)
    return energy * Hartree, (v_nuc + v_elec) * Hartree  # Hartree/e -> V


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    parser.add_argument("--perturbations", type=int, default=4, help="random geometries per conformer")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for name, (g2, conformers) in MOLECULES.items():
        frames = []
        for conf, bond, group, angle in conformers:
            base = rotate_group(molecule(g2), bond, group, angle)
            for k in range(args.perturbations):
                atoms = base.copy()
                if k > 0:  # the first geometry of each conformer is unperturbed
                    atoms.positions += rng.normal(0.0, 0.04, atoms.positions.shape)
                points = esp_points(atoms)
                energy, esp = hf_esp(atoms, points)
                frame = Atoms(atoms.get_chemical_symbols(), atoms.positions)
                frame.info.update(config_type=f"{name}_{conf}", energy=energy, total_charge=0.0,
                                  esp_points=points.ravel(), esp_values=esp)
                frames.append(frame)
                print(f"{name} {conf} {k}: {len(points)} points, ESP {esp.min():+.3f}..{esp.max():+.3f} V",
                      flush=True)
        write(os.path.join(args.out, f"{name}.xyz"), frames, format="extxyz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
