"""distance_2b: the distance r_ij between two atoms of a given species pair."""

import numpy as np

from pargap.descriptors.base import Descriptors, cutoff_function, species_match
from pargap.descriptors.neighbours import neighbour_list


class Distance2b:
    """Pair distance descriptor, x = r_ij (Angstrom), D = 1, weight f_c(r_ij).

    As in gap_fit, every pair within the cutoff is emitted twice (i->j and j->i, centred on i
    and on j), periodic self-images included, so the energy model is
    E = sum_i sum_{j != i} eps(r_ij) with eps carried half by each atom.

    cutoff:                  r_c in Angstrom.
    cutoff_transition_width: width w of the cosine switch-off below r_c (gap_fit default 0.5).
    Z1, Z2:                  atomic numbers of the pair, 0 meaning any species.
    """

    name = "distance_2b"
    dimension = 1

    def __init__(self, *, cutoff, cutoff_transition_width=0.5, Z1=0, Z2=0):
        self.cutoff = float(cutoff)
        self.cutoff_transition_width = float(cutoff_transition_width)
        self.Z1 = int(Z1)
        self.Z2 = int(Z2)
        if self.cutoff <= 0:
            raise ValueError(f"distance_2b: cutoff must be positive, got {cutoff}")
        if not 0 <= self.cutoff_transition_width <= self.cutoff:
            raise ValueError(
                f"distance_2b: cutoff_transition_width must lie in [0, cutoff], "
                f"got {cutoff_transition_width}"
            )

    def params(self):
        """Hyperparameters, as stored in the potential file."""
        return {
            "cutoff": self.cutoff,
            "cutoff_transition_width": self.cutoff_transition_width,
            "Z1": self.Z1,
            "Z2": self.Z2,
        }

    def species_match(self, zi, zj):
        """Mask of pairs (zi, zj) of this descriptor's species, in either order."""
        return (species_match(zi, self.Z1) & species_match(zj, self.Z2)) | (
            species_match(zi, self.Z2) & species_match(zj, self.Z1))

    def compute(self, atoms, gradients=False):
        """Descriptors of one structure (an ase.Atoms)."""
        i, j, r, dvec = neighbour_list(atoms, self.cutoff)
        z = atoms.numbers
        keep = (r < self.cutoff) & self.species_match(z[i], z[j])
        i, j, r, dvec = i[keep], j[keep], r[keep], dvec[keep]
        n = len(r)
        if n == 0:
            return Descriptors.empty(self.dimension, gradients)
        fc, dfc = cutoff_function(r, self.cutoff, self.cutoff_transition_width)
        desc = Descriptors(x=r[:, None].copy(), weight=fc, centre=i)
        if not gradients:
            return desc
        u = dvec / r[:, None]  # unit vector i -> j, (n, 3)
        pos = atoms.positions
        owner = np.arange(n)
        desc.grad_owner = np.concatenate([owner, owner])
        desc.grad_atom = np.concatenate([i, j])
        desc.grad_position = np.concatenate([pos[i], pos[i] + dvec])
        desc.dx_dr = np.concatenate([-u, u])[:, :, None]
        desc.dw_dr = np.concatenate([-dfc[:, None] * u, dfc[:, None] * u])
        return desc
