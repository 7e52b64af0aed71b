"""Neighbour lists: every pair (i, j) with |r_j + S.cell - r_i| < cutoff, periodic images included.

matscipy's cell-list code does the work (about 20x faster than ASE's pure-Python list); a
structure with no periodic direction gets an enclosing box, and a partly periodic one with a
degenerate cell falls back to ASE's list. Pair order is matscipy's; pargap's descriptors never
depend on it for their values.
"""

import numpy as np


def neighbour_list(atoms, cutoff):
    """(i, j, d, D): centre and neighbour indices (P,), distances (P,) in Angstrom and vectors
    D = r_j + shift - r_i (P, 3), for all pairs closer than ``cutoff`` (no self pair at zero shift)."""
    from matscipy.neighbours import neighbour_list as matscipy_list

    pbc = np.asarray(atoms.pbc, dtype=bool)
    if len(atoms) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0), np.zeros((0, 3))
    if not pbc.any():
        positions = atoms.positions - atoms.positions.min(0) + cutoff
        box = np.diag(np.ptp(atoms.positions, axis=0) + 2 * cutoff + 1.0)
        i, j, d, D = matscipy_list("ijdD", positions=positions, cell=box, pbc=pbc, cutoff=cutoff,
                                   numbers=atoms.numbers.astype(np.int32))
    elif atoms.cell.rank == 3:
        i, j, d, D = matscipy_list("ijdD", atoms, cutoff)
    else:
        from ase.neighborlist import neighbor_list

        i, j, d, D = neighbor_list("ijdD", atoms, cutoff, self_interaction=False)
    keep = d < cutoff
    return i[keep].astype(np.int64), j[keep].astype(np.int64), d[keep], D[keep]
