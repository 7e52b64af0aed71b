"""Stillinger-Weber silicon as an ASE calculator: energy, per-atom energies, analytic forces, stress.

F. H. Stillinger and T. A. Weber, Phys. Rev. B 31, 5262 (1985); the parameters are theirs, the
same as LAMMPS's ``potentials/Si.sw`` (which writes cos(theta_0) = -1/3 to 12 digits):

    E = sum_{i<j} phi2(r_ij) + sum_i sum_{j<k} phi3(r_ij, r_ik, cos theta_jik)

    phi2(r)          = A eps [B (sigma/r)^p - (sigma/r)^q] exp(sigma / (r - a sigma))
    phi3(r, s, c)    = lambda eps (c - c0)^2 exp(gamma sigma / (r - a sigma)) exp(gamma sigma / (s - a sigma))

both zero beyond the cutoff a sigma = 3.77118 Angstrom, where every derivative vanishes. The
diamond lattice (cos theta = -1/3, no second neighbour within the cutoff) is the minimum, at
nearest-neighbour distance 2^(1/6) sigma (a = 5.431 Angstrom) with E = -2 eps = -4.3366 eV/atom.

Derivatives, for the vectors d = r_j' - r_i to (image) neighbours, u = d / r:

    d phi2 / d d     = phi2'(r) u
    d c / d d_j      = d_k / (r_j r_k) - c d_j / r_j^2
    d phi3 / d d_j   = lambda eps e_j e_k [2 (c - c0) dc/dd_j - (c - c0)^2 gamma sigma / (r_j - a sigma)^2 u_j]

forces F_j = -dE/dd_j summed over every vector ending on j, plus +dE/dd on the vector's centre;
stress (ASE: (1/V) dE/d strain, eV/A^3) = (1/V) sum_d dE/dd (x) d. Per-atom energies: half of
each pair to each of its atoms, each triplet to its centre atom.
"""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from pargap.descriptors.angle_3b import ordered_slot_pairs
from pargap.errors import InputError
from pargap.descriptors.neighbours import neighbour_list


class StillingerWeber(Calculator):
    """ASE calculator for one-species Stillinger-Weber (silicon by default).

    >>> atoms.calc = StillingerWeber()

    Properties: energy, free_energy (eV), energies (eV per atom), forces (eV/A), stress (eV/A^3,
    Voigt xx yy zz yz xz xy; 3-D periodic cells only). Parameters (eV, Angstrom): epsilon, sigma,
    a (cutoff a sigma), lambda_ (three-body strength), gamma, costheta0, A, B, p, q.
    Atoms of another element than ``symbol`` are an error.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {
        "epsilon": 2.1683, "sigma": 2.0951, "a": 1.80, "lambda_": 21.0, "gamma": 1.20,
        "costheta0": -1.0 / 3.0, "A": 7.049556277, "B": 0.6022245584, "p": 4.0, "q": 0.0,
        "symbol": "Si",
    }
    nolabel = True

    @property
    def cutoff(self):
        """a sigma, Angstrom."""
        return self.parameters.a * self.parameters.sigma

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from ase.data import atomic_numbers

        atoms = self.atoms
        Z = atomic_numbers[self.parameters.symbol]
        if np.any(atoms.numbers != Z):
            raise InputError(f"StillingerWeber: only {self.parameters.symbol} atoms, got "
                             f"{sorted(set(atoms.get_chemical_symbols()))}")
        energies, dE_dd, i, j, d = self.local_terms(atoms)
        n = len(atoms)
        forces = np.zeros((n, 3))
        np.add.at(forces, i, dE_dd)
        np.add.at(forces, j, -dE_dd)
        self.results["energy"] = self.results["free_energy"] = float(energies.sum())
        self.results["energies"] = energies
        self.results["forces"] = forces
        if atoms.cell.rank == 3 and atoms.pbc.all():
            stress = np.einsum("pa,pb->ab", dE_dd, d) / atoms.get_volume()
            stress = 0.5 * (stress + stress.T)
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a 3-D periodic cell")

    def local_terms(self, atoms):
        """(energies (n,) eV, dE/dd (P, 3) eV/A, i (P,), j (P,), d (P, 3) A) over the full
        neighbour list (both directions of every pair): the derivative of the total energy with
        respect to each neighbour vector d = r_j' - r_i, at fixed other vectors."""
        par = self.parameters
        eps, sigma, rc = par.epsilon, par.sigma, self.cutoff
        i, j, r, d = neighbour_list(atoms, rc)
        order = np.argsort(i, kind="stable")
        i, j, r, d = i[order], j[order], r[order], d[order]
        u = d / r[:, None]
        energies = np.zeros(len(atoms))

        # two-body, each pair seen twice (i->j, j->i): half of phi2 per direction
        s = sigma / r
        x = r - rc
        g = par.B * s**par.p - s**par.q
        dg = (-par.p * par.B * s**par.p + par.q * s**par.q) / r
        h = np.exp(sigma / x)
        dh = -sigma / x**2 * h
        phi2 = par.A * eps * g * h
        dphi2 = par.A * eps * (dg * h + g * dh)
        np.add.at(energies, i, 0.5 * phi2)
        dE_dd = (0.5 * dphi2)[:, None] * u

        # three-body, every unordered neighbour pair (j, k) of each centre once
        first, second = ordered_slot_pairs(i)
        once = first < second
        n_, m_ = first[once], second[once]
        e = np.exp(par.gamma * sigma / x)
        de = -par.gamma * sigma / x**2 * e
        cos = np.einsum("tc,tc->t", u[n_], u[m_])
        dc = cos - par.costheta0
        strength = par.lambda_ * eps
        phi3 = strength * dc**2 * e[n_] * e[m_]
        np.add.at(energies, i[n_], phi3)
        dcos_n = (u[m_] - cos[:, None] * u[n_]) / r[n_, None]
        dcos_m = (u[n_] - cos[:, None] * u[m_]) / r[m_, None]
        ee = (strength * e[n_] * e[m_])[:, None]
        grad_n = ee * 2 * dc[:, None] * dcos_n + (strength * dc**2 * de[n_] * e[m_])[:, None] * u[n_]
        grad_m = ee * 2 * dc[:, None] * dcos_m + (strength * dc**2 * e[n_] * de[m_])[:, None] * u[m_]
        np.add.at(dE_dd, n_, grad_n)
        np.add.at(dE_dd, m_, grad_m)
        return energies, dE_dd, i, j, d


def diamond_lattice_constant(sigma=2.0951):
    """Cubic lattice constant (Angstrom) of SW's diamond minimum: nearest neighbours at 2^(1/6) sigma."""
    return 4.0 / np.sqrt(3.0) * 2.0 ** (1.0 / 6.0) * sigma


def diamond_cell(a=None, repeat=1):
    """The 8-atom cubic diamond silicon cell (lattice constant ``a``, default SW's minimum),
    repeated ``repeat`` times along each axis."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=diamond_lattice_constant() if a is None else a, cubic=True)
    return atoms.repeat(repeat) if repeat != 1 else atoms


__all__ = ["StillingerWeber", "diamond_cell", "diamond_lattice_constant"]
