"""pargap's Stillinger-Weber calculator against LAMMPS's pair_style sw with potentials/Si.sw.

    python bench/stillinger_weber_lammps.py [--install] [--tolerance 1e-8]

Energies (eV), forces (eV/A) and stresses (eV/A^3) of the same configurations from both: the
8-atom diamond cell at SW's minimum, the same cell with random displacements and a triclinic
strain, and 216-atom cells (3x3x3) with Gaussian random displacements of 0.1 and 0.2 A per
component. Prints the largest differences and exits 1 if any exceeds the tolerance.

LAMMPS comes from Debian 12 (python3-lammps, liblammps-dev, lammps-data), importable from
pargap's venv (it sees the system site packages). ``--install`` runs
``apt-get install -y python3-lammps liblammps-dev lammps-data`` first when ``import lammps`` fails
(needs root; ``bench/setup --lammps`` does the same). The script is not part of the test suite: bin/setup does not install LAMMPS.
"""

import argparse
import subprocess
import sys

import numpy as np

SI_SW = "/usr/share/lammps/potentials/Si.sw"
APT_PACKAGES = ("python3-lammps", "liblammps-dev", "lammps-data")


def ensure_lammps(install):
    try:
        import lammps  # noqa: F401
        return
    except ImportError:
        if not install:
            sys.exit("no LAMMPS python module: run with --install (as root) or "
                     f"apt-get install {' '.join(APT_PACKAGES)}")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def lammps_sw(atoms, potential_file=SI_SW):
    """(energy eV, forces (n, 3) eV/A, stress (6,) eV/A^3 in ASE's sign and Voigt order) from
    LAMMPS. The cell is rotated to LAMMPS's lower-triangular form and the results rotated back."""
    from lammps import lammps

    rcell, Q = atoms.cell.standard_form()  # rcell = cell Q^T
    positions = atoms.positions @ Q.T
    (ax, _, _), (bx, by, _), (cx, cy, cz) = rcell[:]
    lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        for line in (
            "units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary p p p",
            f"region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box",
            "create_box 1 box", "mass 1 28.0855",
            "pair_style sw", f"pair_coeff * * {potential_file} Si",
            "thermo_style custom pe pxx pyy pzz pyz pxz pxy", "thermo_modify format float %.17g",
        ):
            lmp.command(line)
        n = len(atoms)
        lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, positions.ravel().tolist())
        if lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {n} atoms")
        lmp.command("run 0")
        energy = lmp.get_thermo("pe")
        f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3), shape=(3 * n,)).reshape(n, 3).copy()
        p = np.array([lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")])
        bar_per_eV_A3 = lmp.extract_global("nktv2p")  # LAMMPS's own constant (1.6021765e6 in metal units)
    finally:
        lmp.close()
    P = np.zeros((3, 3))
    P[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] = p
    P = P + np.triu(P, 1).T
    stress = -(Q.T @ P @ Q) / bar_per_eV_A3  # pressure -> ASE stress, back to the input frame
    return energy, f @ Q, stress.flat[[0, 4, 8, 5, 2, 1]]


def configurations(seed=0):
    """(name, atoms): the configurations compared."""
    from pargap.baselines.stillinger_weber import diamond_cell

    rng = np.random.default_rng(seed)
    out = [("8-atom minimum", diamond_cell())]
    moved = diamond_cell()
    moved.positions += rng.normal(0.0, 0.15, moved.positions.shape)
    strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
    moved.set_cell(moved.cell[:] @ strain, scale_atoms=True)
    out.append(("8-atom displaced, triclinic", moved))
    for amplitude in (0.1, 0.2):
        cell = diamond_cell(repeat=3)
        cell.positions += rng.normal(0.0, amplitude, cell.positions.shape)
        out.append((f"216-atom random {amplitude} A", cell))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--install", action="store_true", help="apt-get install LAMMPS if missing (root)")
    p.add_argument("--tolerance", type=float, default=1e-8, help="largest allowed difference (default 1e-8)")
    args = p.parse_args(argv)
    ensure_lammps(args.install)
    from pargap.baselines.stillinger_weber import StillingerWeber

    worst = 0.0
    print(f"{'configuration':30s} {'|dE| eV':>10s} {'|dE|/atom':>10s} {'max|dF| eV/A':>13s} "
          f"{'max|F|':>8s} {'max|ds| eV/A^3':>15s}")
    for name, atoms in configurations():
        atoms.calc = StillingerWeber()
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        e_l, f_l, s_l = lammps_sw(atoms)
        dE, dF, dS = abs(e - e_l), np.abs(f - f_l).max(), np.abs(s - s_l).max()
        worst = max(worst, dE / len(atoms), dF, dS)
        print(f"{name:30s} {dE:10.2e} {dE / len(atoms):10.2e} {dF:13.2e} {np.abs(f).max():8.3f} {dS:15.2e}")
    ok = worst <= args.tolerance
    print(f"largest difference {worst:.2e} (energy per atom, force, stress): "
          f"{'within' if ok else 'ABOVE'} tolerance {args.tolerance:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
