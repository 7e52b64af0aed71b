"""Phase e0: the energy of each isolated species, subtracted from the energies before the fit."""

from pargap.descriptors.neighbours import neighbour_list
from pargap.errors import ConfigError, InputError
from pargap.parallel import gather_sorted


def compute_e0(comm, settings, structures, species, core=None):
    """{Z: e0 in eV} by explicit values, isolated atoms or the average energy per atom, plus e0_offset.
    Energies are taken minus the baseline (core) potential's, as gap_fit does."""
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
        per = gather_sorted(comm, [(s.index, energy(s), s.n_atoms) for s in structures if s.energy is not None])
        if not per:
            raise InputError("e0_method=average needs energies, and no structure has one", file=settings.at_file)
        mean = sum(e / n for _, e, n in per) / len(per)  # mean over frames of E/N, as gap_fit
        values = {z: mean for z in species}
    known = list(species) + [z for z in values if z not in species]  # given e0 of absent species too
    return {z: values.get(z, 0.0) + settings.e0_offset for z in known}


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
