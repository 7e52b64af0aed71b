"""The species of the data and gap_fit's species expansion: which models a ``gap`` entry becomes."""

from pargap.descriptors import make_descriptor
from pargap.gp.kernels import make_kernel


def species_order(comm, structures):
    """Species in order of first appearance in the file (gap_fit's order), the same on all ranks."""
    firsts = {}
    for s in structures:
        for a, z in enumerate(s.atoms.numbers.tolist()):
            firsts.setdefault(z, (s.index, a))
    merged = {}
    for part in comm.allgather(firsts):
        for z, where in part.items():
            merged[z] = min(merged.get(z, where), where)
    return [z for z, _ in sorted(merged.items(), key=lambda t: t[1])]


def species_expansion(g, species):
    """gap_fit's add_species: the descriptor settings of each model one gap entry becomes.

    distance_2b: one per species pair (Z1 <= Z2 in species order); angle_3b: one per centre
    species and neighbour pair; soap: one per centre species, with all species as neighbours."""
    S = len(species)
    pairs = [(species[i], species[j]) for i in range(S) for j in range(i, S)]
    if not g.add_species:
        return [{}]
    if g.descriptor == "distance_2b" and g.Z1 == 0 and g.Z2 == 0:
        return [{"Z1": a, "Z2": b} for a, b in pairs]
    if g.descriptor == "angle_3b" and g.Z == 0 and g.Z1 == 0 and g.Z2 == 0:
        return [{"Z": z, "Z1": a, "Z2": b} for z in species for a, b in pairs]
    if g.descriptor == "soap" and g.Z == 0 and g.species_Z is None:
        return [{"Z": z, "n_species": S, "species_Z": list(species)} for z in species]
    return [{}]


def expand_models(settings, species, entries=None):
    """(descriptor, kernel, gap settings, gap index) for every model of ``entries`` (default
    settings.gap; the charge models pass settings.charge_gap), after species expansion."""
    expanded = []
    for k, g in enumerate(settings.gap if entries is None else entries):
        for extra in species_expansion(g, species):
            descriptor = make_descriptor(g.descriptor, **(g.descriptor_params() | extra))
            kernel = make_kernel(g.covariance_type, dimension=descriptor.dimension, **g.kernel_params())
            expanded.append((descriptor, kernel, g, k))
    return expanded
