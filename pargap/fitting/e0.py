"""Phase e0: the energy of each isolated species, subtracted from the energies before the fit."""

import numpy as np

from pargap.descriptors.neighbours import neighbour_list
from pargap.errors import ConfigError, InputError
from pargap.parallel import gather_sorted


def compute_e0(comm, settings, structures, species, core=None, log=None):
    """{Z: e0 in eV} by explicit values, isolated atoms, the average energy per atom or a least-squares
    fit on the species counts (:func:`fitted_e0`), plus e0_offset. Energies are taken minus the
    baseline (core) potential's, as gap_fit does. log: where the fit's residuals and the warning
    for average e0 on data of varied composition go. As in gap_fit, a given local_property0 sets
    e0 to zero, and a local-property fit without energies needs none."""
    if settings.local_property0 is not None or (
            not comm.allreduce(sum(s.energy is not None for s in structures))
            and comm.allreduce(sum(getattr(s, "local_property", None) is not None for s in structures))):
        return {z: 0.0 for z in species}

    def energy(s):
        return s.energy - (core.calculate(s.atoms, gradients=False)["energy"] if core else 0.0)

    from ase.data import atomic_numbers, chemical_symbols

    e0 = settings.e0
    if isinstance(e0, dict):
        values = {}
        for sym, v in e0.items():
            if sym not in atomic_numbers:
                raise ConfigError(f"e0: unknown element symbol '{sym}'")
            values[atomic_numbers[sym]] = v
        missing = [z for z in species if z not in values]
        if missing:
            first = _first_structure_with(comm, structures, missing)
            raise InputError(
                f"species {[chemical_symbols[z] for z in missing]} have no e0 value (give them in e0)",
                file=settings.at_file, structure=first, key="e0",
            )
    elif e0 is not None:
        values = {z: float(e0) for z in species}
    elif settings.e0_method == "isolated":
        found = gather_sorted(comm, [
            (s.index, int(s.atoms.numbers[0]), energy(s)) for s in structures
            if s.energy is not None and is_isolated_atom(s.atoms, settings.cutoff)
        ])
        values = {}
        for index, z, energy in found:
            if z in values:
                raise InputError(
                    f"a second isolated atom of {chemical_symbols[z]} (e0_method=isolated needs exactly one)",
                    file=settings.at_file, structure=index,
                )
            values[z] = energy
        missing = [z for z in species if z not in values]
        if missing:
            first = _first_structure_with(comm, structures, missing)
            raise InputError(
                f"no isolated-atom structure (one atom, energy, no neighbour within the cutoff) for "
                f"{[chemical_symbols[z] for z in missing]}: add one, or set e0 or e0_method=average",
                file=settings.at_file, structure=first, key="e0",
            )
    else:
        per = gather_sorted(comm, [(s.index, energy(s), [int(np.sum(s.atoms.numbers == z)) for z in species])
                                   for s in structures if s.energy is not None])
        if not per:
            raise InputError(f"e0_method={settings.e0_method} needs energies, and no structure has one",
                             file=settings.at_file)
        energies = np.array([e for _, e, _ in per])
        counts = np.array([c for _, _, c in per], dtype=float)
        if settings.e0_method == "fit":
            fitted, residual, rank = fitted_e0(energies, counts)
            values = dict(zip(species, fitted.tolist()))
            if log:
                log(f"e0 fitted on {len(per)} total energies: residual per atom RMS "
                    f"{np.sqrt(np.mean(residual**2)) * 1000:.3f} meV/atom, max {np.abs(residual).max() * 1000:.3f} meV/atom"
                    + ("" if rank == len(species) else f"; the compositions fix only {rank} combination(s) of "
                       f"the {len(species)} e0 (minimum-norm solution)"))
        else:
            mean = float(np.mean(energies / counts.sum(axis=1)))  # mean over frames of E/N, as gap_fit
            values = {z: mean for z in species}
            if log and composition_varies(counts):
                log("warning: e0_method=average gives every species the same e0 (the mean energy per atom), but "
                    "the composition varies between structures: the GP must then learn the species' energy "
                    "differences; e0_method=fit (least squares on the species counts) is better suited")
    known = list(species) + [z for z in values if z not in species]  # given e0 of absent species too
    return {z: values.get(z, 0.0) + settings.e0_offset for z in known}


def fitted_e0(energies, counts):
    """Per-species e0 by least squares of the total energies on the species counts (e0_method=fit):

        e0 = argmin_e0 sum_s (E_s - sum_z n_sz e0_z)^2

    energies: (S,) eV; counts: (S, Z) atoms of each species in each structure. Returns (e0 (Z,) eV,
    residuals per atom (S,) eV/atom, rank of the counts). Where the compositions do not fix every
    e0 (rank < Z, e.g. one molecule's stoichiometry) the minimum-norm solution is taken: each
    structure's baseline sum_z n_sz e0_z is still the least-squares one."""
    import scipy.linalg

    counts = np.asarray(counts, dtype=float)
    e0, _, rank, _ = scipy.linalg.lstsq(counts, np.asarray(energies, dtype=float))
    return e0, (energies - counts @ e0) / counts.sum(axis=1), int(rank)


def composition_varies(counts):
    """Whether the species fractions n_z / N of the structures (rows of ``counts``) differ."""
    counts = np.asarray(counts, dtype=float)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    return bool(len(fractions) and np.ptp(fractions, axis=0).max() > 1e-9)


def _first_structure_with(comm, structures, zs):
    mine = [s.index for s in structures if set(s.atoms.numbers.tolist()) & set(zs)]
    found = [i for part in comm.allgather(mine[:1]) for i in part]
    return min(found) if found else None


def is_isolated_atom(atoms, cutoff):
    """One atom and no neighbour (periodic image) within the cutoff (gap_fit's e0_from_xyz)."""
    if len(atoms) != 1:
        return False
    if not atoms.pbc.any():
        return True
    return len(neighbour_list(atoms, cutoff)[0]) == 0
