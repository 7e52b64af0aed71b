"""The container every descriptor returns, and the smooth cutoff shared by all of them."""

from dataclasses import dataclass

import numpy as np


def species_match(z, Z):
    """Mask of atomic numbers z (array) matching the descriptor species Z, 0 meaning any species."""
    return (Z == 0) | (z == Z)


def cutoff_function(r, cutoff, width):
    """Smooth cutoff f_c(r) and its derivative (gap_fit's ``coordination_function``).

    f_c = 1 for r <= r_c - w; 1/2 [cos(pi (r - r_c + w) / w) + 1] for r_c - w < r <= r_c; 0 beyond.

    r: (n,) distances in Angstrom. Returns (f_c, df_c/dr), each (n,); df_c/dr in 1/Angstrom.
    """
    r = np.asarray(r, dtype=float)
    fc = np.zeros_like(r)
    dfc = np.zeros_like(r)
    inner = r <= cutoff - width
    fc[inner] = 1.0
    if width > 0.0:
        shell = (r > cutoff - width) & (r <= cutoff)
        phase = np.pi * (r[shell] - cutoff + width) / width
        fc[shell] = 0.5 * (np.cos(phase) + 1.0)
        dfc[shell] = -0.5 * np.pi / width * np.sin(phase)
    return fc, dfc


@dataclass
class Descriptors:
    """The n descriptors of one structure for one descriptor type, with labelled gradients.

    x:      (n, D) descriptor values.
    weight: (n,)   cutoff weights w(x) (the kernel is w(x) k(x, s) w_s).
    centre: (n,)   atom whose local energy the descriptor carries.

    Gradients are G labelled rows, one per (descriptor, atom slot); several slots of a descriptor
    may belong to the same atom (periodic self-images), and they are summed where used:

    grad_owner:    (G,)      which descriptor the row belongs to.
    grad_atom:     (G,)      atom index of the slot.
    grad_position: (G, 3)    absolute Cartesian position of the slot (image position), Angstrom,
                             used for virials.
    dx_dr:         (G, 3, D) derivative of x with respect to the slot's position.
    dw_dr:         (G, 3)    derivative of the cutoff weight.
    """

    x: np.ndarray
    weight: np.ndarray
    centre: np.ndarray
    grad_owner: np.ndarray | None = None
    grad_atom: np.ndarray | None = None
    grad_position: np.ndarray | None = None
    dx_dr: np.ndarray | None = None
    dw_dr: np.ndarray | None = None

    def __len__(self):
        return len(self.x)

    @property
    def has_gradients(self):
        return self.dx_dr is not None

    @classmethod
    def empty(cls, dimension, gradients):
        """No descriptors (e.g. an isolated atom for a pair descriptor)."""
        z = np.zeros(0, dtype=int)
        if not gradients:
            return cls(np.zeros((0, dimension)), np.zeros(0), z)
        return cls(
            np.zeros((0, dimension)), np.zeros(0), z, z, z,
            np.zeros((0, 3)), np.zeros((0, 3, dimension)), np.zeros((0, 3)),
        )
