"""angle_3b: a triplet j-i-k described by its two arm lengths and the opposite side."""

import numpy as np

from pargap.descriptors.base import Descriptors, cutoff_function
from pargap.descriptors.base import species_match as _species_match
from pargap.descriptors.neighbours import neighbour_list


def ordered_slot_pairs(centre):
    """All ordered pairs (n, m), n != m, of neighbour-list rows sharing a centre.

    centre: (P,) centre atom of each neighbour row, sorted ascending (rows grouped by centre).
    Returns (first, second), each (T,) row indices, T = sum_i c_i (c_i - 1) with c_i the row
    count of centre i, ordered by centre, then n, then m: for one centre with rows s..s+c-1,
    row s+a is followed by its partners s+b for b = 0..c-1, b != a. Pure index arithmetic over
    the CSR-like layout, no loop over atoms.
    """
    P = len(centre)
    if P == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    # group start and size of each row's centre
    new_group = np.ones(P, dtype=bool)
    new_group[1:] = centre[1:] != centre[:-1]
    group = np.cumsum(new_group) - 1
    group_start = np.flatnonzero(new_group)
    group_size = np.diff(np.append(group_start, P))
    start = group_start[group]  # (P,)
    local = np.arange(P) - start  # a: position of the row inside its group
    reps = group_size[group] - 1  # partners per row
    first = np.repeat(np.arange(P), reps)
    # t = 0..c-2 inside each row's block; skip the row itself: b = t + (t >= a)
    t = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
    b = t + (t >= local[first])
    second = start[first] + b
    return first, second


class Angle3b:
    """Three-body descriptor of a triplet j-i-k centred on atom i, D = 3 (gap_fit ``angle_3b``).

        x = (r_ij + r_ik, (r_ij - r_ik)^2, r_jk),   r_jk = |d_ij - d_ik|   (Angstrom, Angstrom^2, Angstrom)
        w = f_c(r_ij) f_c(r_ik)

    with d_ij = r_j' - r_i the vector to the (image) neighbour j'. For every centre i of species Z,
    every ordered pair of distinct neighbour slots (j, k) with r_ij, r_ik < r_c is emitted if
    (Z_k ~ Z1 and Z_j ~ Z2) or (Z_k ~ Z2 and Z_j ~ Z1), 0 matching any species. So each unordered
    triplet appears twice ((j,k) and (k,j), with equal x), and periodic images of one atom are
    distinct slots. The x is symmetric under j <-> k; no further symmetrisation (as gap_fit).

    Gradients, three slots per descriptor: i at r_i, j at r_i + d_ij, k at r_i + d_ik
    (u_ij = d_ij / r_ij, u_ik = d_ik / r_ik, u_jk = (d_ij - d_ik) / r_jk):

        dx/dr_j = (u_ij,        2 (r_ij - r_ik) u_ij,          u_jk)
        dx/dr_k = (u_ik,       -2 (r_ij - r_ik) u_ik,         -u_jk)
        dx/dr_i = (-u_ij - u_ik, 2 (r_ij - r_ik)(u_ik - u_ij),  0)
        dw/dr_j = f_c'(r_ij) f_c(r_ik) u_ij,  dw/dr_k = f_c(r_ij) f_c'(r_ik) u_ik,  dw/dr_i = -(sum)

    cutoff:                  r_c in Angstrom.
    cutoff_transition_width: width of the cosine switch-off below r_c (gap_fit default 0.5).
    Z:                       atomic number of the centre atom i, 0 meaning any.
    Z1, Z2:                  atomic numbers of the two neighbours (in either order), 0 meaning any.
    """

    name = "angle_3b"
    dimension = 3

    def __init__(self, *, cutoff, cutoff_transition_width=0.5, Z=0, Z1=0, Z2=0):
        self.cutoff = float(cutoff)
        self.cutoff_transition_width = float(cutoff_transition_width)
        self.Z = int(Z)
        self.Z1 = int(Z1)
        self.Z2 = int(Z2)
        if self.cutoff <= 0:
            raise ValueError(f"angle_3b: cutoff must be positive, got {cutoff}")
        if not 0 <= self.cutoff_transition_width <= self.cutoff:
            raise ValueError(
                f"angle_3b: cutoff_transition_width must lie in [0, cutoff], "
                f"got {cutoff_transition_width}"
            )

    def params(self):
        """Hyperparameters, as stored in the potential file."""
        return {
            "cutoff": self.cutoff,
            "cutoff_transition_width": self.cutoff_transition_width,
            "Z": self.Z,
            "Z1": self.Z1,
            "Z2": self.Z2,
        }

    def triplets(self, atoms):
        """The kept triplets -> (i, j, k, r_ij, r_ik, d_ij, d_ik): atoms (n,), distances (n,),
        difference vectors to the (image) neighbours (n, 3).

        Order: centre i ascending, then the slot of j, then the slot of k (ASE's neighbour order
        inside a centre, not libAtoms'; see GAPFIT_MATH section 1).
        """
        i, j, r, dvec = neighbour_list(atoms, self.cutoff)
        z = atoms.numbers
        # a neighbour row can take part only if its centre is of species Z and the neighbour is
        # of species Z1 or Z2; dropping the others early does not change the kept triplets' order
        keep = (r < self.cutoff) & _species_match(z[i], self.Z) & (
            _species_match(z[j], self.Z1) | _species_match(z[j], self.Z2)
        )
        i, j, r, dvec = i[keep], j[keep], r[keep], dvec[keep]
        order = np.argsort(i, kind="stable")
        i, j, r, dvec = i[order], j[order], r[order], dvec[order]
        n, m = ordered_slot_pairs(i)
        zj, zk = z[j[n]], z[j[m]]
        pair = (_species_match(zk, self.Z1) & _species_match(zj, self.Z2)) | (
            _species_match(zk, self.Z2) & _species_match(zj, self.Z1)
        )
        n, m = n[pair], m[pair]
        return i[n], j[n], j[m], r[n], r[m], dvec[n], dvec[m]

    def compute(self, atoms, gradients=False):
        """Descriptors of one structure (an ase.Atoms)."""
        i, j, k, r_ij, r_ik, d_ij, d_ik = self.triplets(atoms)
        n = len(i)
        if n == 0:
            return Descriptors.empty(self.dimension, gradients)
        d_jk = d_ij - d_ik  # r_j' - r_k'
        r_jk = np.linalg.norm(d_jk, axis=1)
        diff = r_ij - r_ik
        x = np.stack([r_ij + r_ik, diff**2, r_jk], axis=1)
        fc_ij, dfc_ij = cutoff_function(r_ij, self.cutoff, self.cutoff_transition_width)
        fc_ik, dfc_ik = cutoff_function(r_ik, self.cutoff, self.cutoff_transition_width)
        desc = Descriptors(x=x, weight=fc_ij * fc_ik, centre=i)
        if not gradients:
            return desc

        u_ij = d_ij / r_ij[:, None]
        u_ik = d_ik / r_ik[:, None]
        u_jk = d_jk / r_jk[:, None]
        two_diff = 2.0 * diff[:, None]
        dx_j = np.stack([u_ij, two_diff * u_ij, u_jk], axis=2)  # (n, 3, D)
        dx_k = np.stack([u_ik, -two_diff * u_ik, -u_jk], axis=2)
        dx_i = np.stack([-u_ij - u_ik, two_diff * (u_ik - u_ij), np.zeros_like(u_jk)], axis=2)
        dw_j = (dfc_ij * fc_ik)[:, None] * u_ij
        dw_k = (fc_ij * dfc_ik)[:, None] * u_ik

        pos_i = atoms.positions[i]
        owner = np.arange(n)
        desc.grad_owner = np.concatenate([owner, owner, owner])
        desc.grad_atom = np.concatenate([i, j, k])
        desc.grad_position = np.concatenate([pos_i, pos_i + d_ij, pos_i + d_ik])
        desc.dx_dr = np.concatenate([dx_i, dx_j, dx_k])
        desc.dw_dr = np.concatenate([-(dw_j + dw_k), dw_j, dw_k])
        return desc
