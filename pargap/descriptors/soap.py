"""SOAP: the power spectrum of the smoothed neighbour density, exactly as gap_fit defines it.

GAPFIT_MATH.md section 4 is the specification. For centre i with neighbours j (periodic images
included, r_ij < r_c) of species channel sigma_j:

    c_{sigma n l m} = sum_{j: sigma_j = sigma} f_c(r_ij) R_nl(r_ij) Y_lm(u_ij)
                      + [centre term] w_c L_{1n} Y_00 delta_{l0}
    R_nl(r)         = sum_a g_l(r; rho_a) T_an,     g_l(r; rho) = exp(-alpha (r^2 + rho^2)) i_l(2 alpha r rho)
    p_{k k' l}      = (2l+1)^(-1/2) sum_m c_{k l m} c_{k' l m}  (x sqrt(2) for k != k')

with k = sigma n_max + n (species-major), the pairs (k, k') in the order (0,0), (1,0), (1,1),
(2,0), ... and l fastest; a trailing element (0 before the norm, covariance_sigma0 after) and
unit Euclidean length. Everything is vectorised over all (centre, neighbour) pairs of the
structure: radial parts (P, n_max, l_max+1), harmonics (P, (l_max+1)^2), coefficients summed per
centre by one sparse matrix product, the power spectrum per l by batched matrix products.
"""

import math

import numpy as np
import scipy.linalg
from scipy.special import erf, ive

from pargap.descriptors._soap_kernels import (
    density_coefficients,
    hermite_radial,
    power_spectrum,
    soap_gradients,
)
from pargap.descriptors.base import Descriptors, cutoff_function
from pargap.descriptors.neighbours import neighbour_list


# --------------------------------------------------------------------------------------------
# Radial basis


def equispaced_gauss_basis(n_max, cutoff, atom_sigma, basis_error_exponent):
    """gap_fit's EQUISPACED_GAUSS radial basis (GAPFIT_MATH 4.2).

    alpha = 1 / (2 sigma_a^2); R_b = r_c + sigma_a sqrt(2 eps ln 10); rho_a = (a - 1) R_b / n_max.
    C_ab = exp(-alpha (rho_a - rho_b)^2);  S_ab = int_0^inf r^2 e^{-alpha (r-rho_a)^2}
    e^{-alpha (r-rho_b)^2} dr (closed form below); S = L L^T (lower Cholesky); T = C^{-1} L.

    Returns alpha (1/Angstrom^2), rho (n_max,) in Angstrom, T and L, each (n_max, n_max).
    """
    alpha = 1.0 / (2.0 * atom_sigma**2)
    basis_cutoff = cutoff + atom_sigma * math.sqrt(2.0 * basis_error_exponent * math.log(10.0))
    rho = np.arange(n_max) * (basis_cutoff / n_max)
    ra, rb = rho[:, None], rho[None, :]
    C = np.exp(-alpha * (ra - rb) ** 2)
    p = ra + rb
    S = (
        math.sqrt(2.0) * alpha**1.5 * p * np.exp(-alpha * (ra**2 + rb**2))
        + alpha * math.sqrt(math.pi) * np.exp(-0.5 * alpha * (ra - rb) ** 2)
        * (1.0 + alpha * p**2) * (1.0 + erf(p * math.sqrt(0.5 * alpha)))
    ) / math.sqrt(128.0 * alpha**5)
    L = scipy.linalg.cholesky(S, lower=True)
    T = scipy.linalg.solve(C, L)
    return alpha, rho, T, L


def scaled_spherical_in(l_top, z):
    """e^{-z} i_l(z) for l = 0..l_top, i_l the modified spherical Bessel function of the first kind.

    z: (...) arguments >= 0. Returns (l_top + 1, ...). The two highest orders come from
    scipy's exponentially scaled I_v (i_l(z) = sqrt(pi / 2z) I_{l+1/2}(z)); lower orders follow
    by the downward recurrence i_{l-1} = i_{l+1} + (2l+1)/z i_l, which is stable for i_l (the
    minimal solution) at every z, unlike the upward one. At z = 0: i_0 = 1, i_{l>0} = 0.
    """
    l_top = max(int(l_top), 1)
    z = np.asarray(z, dtype=float)
    out = np.zeros((l_top + 1,) + z.shape)
    zero = z == 0.0
    zs = np.where(zero, 1.0, z)
    prefactor = np.sqrt(0.5 * np.pi / zs)
    out[l_top] = prefactor * ive(l_top + 0.5, zs)
    out[l_top - 1] = prefactor * ive(l_top - 0.5, zs)
    inv_z = 1.0 / zs
    for l in range(l_top - 1, 0, -1):
        out[l - 1] = out[l + 1] + (2 * l + 1) * inv_z * out[l]
    out[:, zero] = 0.0
    out[0, zero] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# Spherical harmonics


def _lm_tables(l_max):
    """Index tables over lm = l^2 + l + m (m = -l..l): l, |m|, the normalisation N_lm and
    whether the function is the cosine (m >= 0) or sine (m < 0) type."""
    l_of, am_of, norm, cos_type = [], [], [], []
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            am = abs(m)
            n = math.sqrt((2 * l + 1) / (4.0 * math.pi) * math.factorial(l - am) / math.factorial(l + am))
            if am > 0:
                n *= math.sqrt(2.0)
            l_of.append(l)
            am_of.append(am)
            norm.append(n)
            cos_type.append(m >= 0)
    return np.array(l_of), np.array(am_of), np.array(norm), np.array(cos_type)


HARMONICS_BLOCK = 2048
"""Unit vectors handled at once by real_spherical_harmonics: its temporaries stay in cache, so its
time grows linearly with the number of pairs (one call on all pairs of 4,096 atoms was 2.5x slower
per pair than on 512)."""


def real_spherical_harmonics(u, l_max, gradients=False):
    """Real orthonormal spherical harmonics Y_lm(u) of unit vectors u, in Cartesian form.

    Y_l0 = N_l0 Q_l^0(z);  Y_l,+m = N_lm Q_l^m(z) Re(x + iy)^m;  Y_l,-m = N_lm Q_l^m(z) Im(x + iy)^m,
    with Q_l^m = d^m P_l / dz^m (Legendre P_l, no Condon-Shortley phase), computed by
    Q_m^m = (2m-1)!!, Q_{m+1}^m = (2m+1) z Q_m^m, (l-m) Q_l^m = (2l-1) z Q_{l-1}^m - (l+m-1) Q_{l-2}^m,
    and N_lm = sqrt((2 - delta_m0) (2l+1)/(4 pi) (l-m)!/(l+m)!). The power spectrum does not
    depend on this choice of orthonormal basis within each l.

    u: (P, 3) unit vectors. Returns Y (P, (l_max+1)^2) indexed l^2 + l + m, and with gradients
    also dY (P, 3, (l_max+1)^2): the tangential gradient (I - u u^T) grad_u Y, so that the
    gradient with respect to the neighbour vector r = |r| u is dY / |r|. It uses the extension
    F(x, y, z) above, with d Q_l^m / dz = Q_l^{m+1} and d (x+iy)^m = m (x+iy)^{m-1} (dx + i dy).
    """
    P = len(u)
    if P > HARMONICS_BLOCK:
        LM = (l_max + 1) ** 2
        Y, g = np.empty((P, LM)), np.empty((P, 3, LM)) if gradients else None
        for start in range(0, P, HARMONICS_BLOCK):
            block = slice(start, min(start + HARMONICS_BLOCK, P))
            Yb, gb = real_spherical_harmonics(u[block], l_max, gradients)
            Y[block] = Yb
            if gradients:
                g[block] = gb
        return Y, g
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    L1 = l_max + 1
    # cs[m] = Re (x+iy)^m, cs[L1 + m] = Im (x+iy)^m
    cs = np.empty((2 * L1, P))
    cs[0] = 1.0
    cs[L1] = 0.0
    for m in range(1, L1):
        cs[m] = x * cs[m - 1] - y * cs[L1 + m - 1]
        cs[L1 + m] = x * cs[L1 + m - 1] + y * cs[m - 1]
    Q = np.zeros((L1, L1 + 1, P))  # Q[l, m]; Q[l, l+1] = 0
    for m in range(L1):
        Q[m, m] = float(np.prod(np.arange(2 * m - 1, 0, -2)))
        if m + 1 < L1:
            Q[m + 1, m] = (2 * m + 1) * z * Q[m, m]
        for l in range(m + 2, L1):
            Q[l, m] = ((2 * l - 1) * z * Q[l - 1, m] - (l + m - 1) * Q[l - 2, m]) / (l - m)
    l_of, am_of, norm, cos_type = _lm_tables(l_max)
    trig = np.where(cos_type, am_of, L1 + am_of)  # row of cs for each lm
    NQ = norm[:, None] * Q[l_of, am_of]  # (LM, P)
    Y = (NQ * cs[trig]).T
    if not gradients:
        return Y, None
    # d/dx, d/dy of Re/Im (x+iy)^m: Re: (m Re_{m-1}, -m Im_{m-1}); Im: (m Im_{m-1}, m Re_{m-1})
    prev_re = np.maximum(am_of - 1, 0)
    prev_im = L1 + prev_re
    mm = am_of[:, None].astype(float)
    dtrig_dx = np.where(cos_type[:, None], mm * cs[prev_re], mm * cs[prev_im])
    dtrig_dy = np.where(cos_type[:, None], -mm * cs[prev_im], mm * cs[prev_re])
    g = np.empty((P, 3, len(l_of)))
    g[:, 0] = (NQ * dtrig_dx).T
    g[:, 1] = (NQ * dtrig_dy).T
    g[:, 2] = (norm[:, None] * Q[l_of, am_of + 1] * cs[trig]).T
    g -= u[:, :, None] * np.einsum("pc,pcq->pq", u, g)[:, None, :]
    return Y, g


# --------------------------------------------------------------------------------------------
# The descriptor


class Soap:
    """gap_fit's ``soap`` descriptor (EQUISPACED_GAUSS basis, nu = 2 power spectrum).

    cutoff:                  r_c in Angstrom; neighbours with r_ij < r_c contribute.
    cutoff_transition_width: width w of the cosine switch-off f_c below r_c (gap_fit default 0.5).
    l_max, n_max:            angular and radial expansion orders.
    atom_sigma:              Gaussian width sigma_a of each neighbour's density, Angstrom.
    central_weight:          weight of the centre atom's own density (gap_fit default 1).
    n_species, species_Z:    neighbour species channels; species_Z lists n_species atomic numbers
                             (species_Z = [0] or [] with n_species = 1: every neighbour in one channel).
                             Neighbours of species not listed are ignored.
    Z:                       centre species (0 = every atom is a centre).
    normalise:               divide by the Euclidean norm (gap_fit default True).
    covariance_sigma0:       value of the trailing element after normalisation (default 0).
    basis_error_exponent:    eps in the radial basis cutoff r_c + sigma_a sqrt(2 eps ln 10).
    central_reference_all_species: add the centre term to every species channel (True) or only
                             to the centre's own channel; None gives gap_fit's default
                             (True for n_species = 1, else False).

    The cutoff weight of every SOAP descriptor is 1 (f_c acts inside the density).
    D = (l_max+1) K (K+1)/2 + 1 with K = n_species n_max.
    """

    name = "soap"

    def __init__(self, *, cutoff, l_max, n_max, atom_sigma, cutoff_transition_width=0.5,
                 central_weight=1.0, n_species=1, species_Z=(0,), Z=0, normalise=True,
                 covariance_sigma0=0.0, basis_error_exponent=10.0,
                 central_reference_all_species=None):
        self.cutoff = float(cutoff)
        self.cutoff_transition_width = float(cutoff_transition_width)
        self.l_max = int(l_max)
        self.n_max = int(n_max)
        self.atom_sigma = float(atom_sigma)
        self.central_weight = float(central_weight)
        self.n_species = int(n_species)
        species_Z = [int(s) for s in np.atleast_1d(np.asarray(species_Z, dtype=int))]
        if not species_Z and self.n_species == 1:
            species_Z = [0]
        self.species_Z = species_Z
        self.Z = int(Z)
        self.normalise = bool(normalise)
        self.covariance_sigma0 = float(covariance_sigma0)
        self.basis_error_exponent = float(basis_error_exponent)
        if central_reference_all_species is None:
            central_reference_all_species = self.n_species == 1
        self.central_reference_all_species = bool(central_reference_all_species)

        if self.cutoff <= 0:
            raise ValueError(f"soap: cutoff must be positive, got {cutoff}")
        if not 0 <= self.cutoff_transition_width <= self.cutoff:
            raise ValueError(
                f"soap: cutoff_transition_width must lie in [0, cutoff], got {cutoff_transition_width}"
            )
        if self.l_max < 0 or self.n_max < 1:
            raise ValueError(f"soap: need l_max >= 0 and n_max >= 1, got l_max={l_max}, n_max={n_max}")
        if self.atom_sigma <= 0:
            raise ValueError(f"soap: atom_sigma must be positive, got {atom_sigma}")
        if self.basis_error_exponent <= 0:
            raise ValueError(f"soap: basis_error_exponent must be positive, got {basis_error_exponent}")
        if self.n_species < 1 or len(self.species_Z) != self.n_species:
            raise ValueError(
                f"soap: species_Z must list n_species={n_species} atomic numbers, got {list(species_Z)}"
            )

        self.n_channels = self.n_species * self.n_max  # K
        K = self.n_channels
        self.dimension = (self.l_max + 1) * K * (K + 1) // 2 + 1
        self.alpha, self.rho, self.T, self.L = equispaced_gauss_basis(
            self.n_max, self.cutoff, self.atom_sigma, self.basis_error_exponent
        )
        self._l_of_lm = _lm_tables(self.l_max)[0]
        # channel pairs (k, k'), k' <= k, k outer; scale (2l+1)^(-1/2), x sqrt(2) off the diagonal
        self._kk, self._kp = np.tril_indices(K)
        self._scale = (np.where(self._kk == self._kp, 1.0, math.sqrt(2.0))[:, None]
                       / np.sqrt(2.0 * np.arange(self.l_max + 1) + 1.0)[None, :])

    def params(self):
        """Hyperparameters, as stored in the potential file (``Soap(**params())`` rebuilds it)."""
        return {
            "cutoff": self.cutoff,
            "cutoff_transition_width": self.cutoff_transition_width,
            "l_max": self.l_max,
            "n_max": self.n_max,
            "atom_sigma": self.atom_sigma,
            "central_weight": self.central_weight,
            "n_species": self.n_species,
            "species_Z": list(self.species_Z),
            "Z": self.Z,
            "normalise": self.normalise,
            "covariance_sigma0": self.covariance_sigma0,
            "basis_error_exponent": self.basis_error_exponent,
            "central_reference_all_species": self.central_reference_all_species,
        }

    def species_channel(self, numbers):
        """Species channel (0-based) of each atomic number, -1 if not a listed species.

        As gap_fit's species_map: a 0 in species_Z maps every species to the first channel
        (and wipes earlier entries); later explicit entries override it.
        """
        numbers = np.asarray(numbers, dtype=int)
        table = np.full(max(int(numbers.max(initial=0)), max(self.species_Z)) + 1, -1)
        for k, Zs in enumerate(self.species_Z):
            if Zs == 0:
                table[:] = 0
            else:
                table[Zs] = k
        return table[numbers]

    def radial_exact(self, r):
        """G_nl(r) = sum_a g_l(r; rho_a) T_an and dG/dr, each (P, n_max, l_max+1), no cutoff function.

        g_l = exp(-alpha (r - rho)^2) [e^{-z} i_l(z)], z = 2 alpha r rho (the stable form of
        exp(-alpha (r^2 + rho^2)) i_l(z)); dg_l/dr = exp(-alpha (r-rho)^2)
        [(-2 alpha r + l/r) e^{-z} i_l + 2 alpha rho e^{-z} i_{l+1}].
        """
        alpha, rho, T = self.alpha, self.rho, self.T
        rr = np.maximum(r, 1e-12)[:, None]
        z = 2.0 * alpha * rr * rho[None, :]  # (P, a)
        E = np.exp(-alpha * (rr - rho[None, :]) ** 2)
        I = scaled_spherical_in(self.l_max + 1, z)  # (l_max+2, P, a)
        ls = np.arange(self.l_max + 1)[:, None, None]
        g = E * I[: self.l_max + 1]  # (l, P, a)
        dg = E * ((-2.0 * alpha * rr + ls / rr) * I[: self.l_max + 1] + 2.0 * alpha * rho * I[1:])
        return (g @ T).transpose(1, 2, 0), (dg @ T).transpose(1, 2, 0)

    def _radial_table(self):
        """G and dG/dr on a uniform grid over [0, cutoff], spacing h = atom_sigma / 400 (at most
        1e-3 A), for cubic Hermite interpolation: relative error ~1e-12 in G, ~1e-10 in dG/dr."""
        if getattr(self, "_table", None) is None:
            h = min(1e-3, self.atom_sigma / 400.0)
            grid = np.arange(int(np.ceil(self.cutoff / h)) + 2) * h
            G, dG = self.radial_exact(grid)
            shape = (len(grid), self.n_max * (self.l_max + 1))
            self._table = (h, np.ascontiguousarray(G.reshape(shape)), np.ascontiguousarray(dG.reshape(shape)))
        return self._table

    def _radial(self, r, gradients):
        """R_nl(r) = f_c(r) G_nl(r), (P, n_max, l_max+1), and dR/dr, with G interpolated (cubic
        Hermite, from exact values and slopes on a fine grid: radial_exact is the definition)."""
        h, G, dG = self._radial_table()
        fc, dfc = cutoff_function(r, self.cutoff, self.cutoff_transition_width)
        R, dR = hermite_radial(np.ascontiguousarray(r, dtype=float), h, G, dG, fc, dfc, bool(gradients))
        shape = (len(r), self.n_max, self.l_max + 1)
        return R.reshape(shape), (dR.reshape(shape) if gradients else None)

    def count(self, atoms):
        """Number of descriptors of one structure (its centres), without computing them."""
        return int(np.count_nonzero(atoms.numbers == self.Z)) if self.Z else len(atoms)

    def centre_chunks(self, atoms, max_bytes):
        """(groups, neighbours): the centres (atom indices, ascending) of one structure in
        consecutive groups whose gradients, (centres + their neighbour slots) x 3 x D float64,
        take at most ``max_bytes`` each (at least one centre per group), and the structure's
        neighbour list: compute(atoms, True, centres=group, neighbours=neighbours) one group at a
        time bounds the memory of a large structure's gradients. A structure that fits is one
        group, None (all centres)."""
        numbers = atoms.numbers
        centres = np.flatnonzero(numbers == self.Z) if self.Z else np.arange(len(atoms))
        neighbours = neighbour_list(atoms, self.cutoff)
        i, j, r, _ = neighbours
        keep = (r < self.cutoff) & (self.species_channel(numbers)[j] >= 0) & (r > 0)
        slots = 1 + np.bincount(i[keep], minlength=len(atoms))[centres]
        per_slot = 3 * self.dimension * 8
        chunks, start, used = [], 0, 0
        for k, n in enumerate(slots.tolist()):
            if k > start and (used + n) * per_slot > max_bytes:
                chunks.append(centres[start:k])
                start, used = k, 0
            used += n
        chunks.append(centres[start:])
        return ([None] if len(chunks) == 1 else chunks), neighbours

    def compute(self, atoms, gradients=False, centres=None, neighbours=None):
        """Descriptors of one structure (an ase.Atoms): one per atom of species Z, in atom order
        (only those of the atoms ``centres`` if given; ``neighbours``: the structure's neighbour
        list within the cutoff if already made: see :meth:`centre_chunks`).

        With gradients, the rows are first the N centre slots (row d: the centre of descriptor d,
        minus the sum of its neighbour slots), then one row per neighbour slot r_ij < r_c of a
        listed species, grouped by descriptor (periodic self-images are separate slots), each
        with the slot's absolute position (r_i, or r_i + D_ij for a neighbour image).
        """
        numbers = atoms.numbers
        n_atoms = len(atoms)
        D = self.dimension
        all_centres = np.flatnonzero(numbers == self.Z) if self.Z else np.arange(n_atoms)
        centres = all_centres if centres is None else all_centres[np.isin(all_centres, centres)]
        N = len(centres)
        if N == 0:
            return Descriptors.empty(D, gradients)
        desc_of_atom = np.full(n_atoms, -1)
        desc_of_atom[centres] = np.arange(N)
        chan_of_atom = self.species_channel(numbers)

        i, j, r, dvec = neighbour_list(atoms, self.cutoff) if neighbours is None else neighbours
        keep = (r < self.cutoff) & (desc_of_atom[i] >= 0) & (chan_of_atom[j] >= 0) & (r > 0)
        order = np.argsort(i[keep], kind="stable")
        i, j, r, dvec = i[keep][order], j[keep][order], r[keep][order], dvec[keep][order]
        P = len(r)
        owner = desc_of_atom[i]
        sp = chan_of_atom[j]
        u = dvec / r[:, None] if P else np.zeros((0, 3))

        S, n, L1, K = self.n_species, self.n_max, self.l_max + 1, self.n_channels
        LM = L1 * L1
        l_of_lm = self._l_of_lm

        R, dR = self._radial(r, gradients)  # (P, n, L1)
        Y, dY = real_spherical_harmonics(u, self.l_max, gradients)  # (P, LM), (P, 3, LM)

        # c_{i, sigma, n, lm}: sum over the pairs of centre i and channel sigma
        c = density_coefficients(R, Y, owner, sp, l_of_lm, N, S)
        centre_term = self.central_weight * self.L[0, 0] / math.sqrt(4.0 * math.pi)
        if self.central_reference_all_species:
            c[:, :, 0, 0] += centre_term
        else:
            own = chan_of_atom[centres]
            mine = own >= 0
            c[np.flatnonzero(mine), own[mine], 0, 0] += centre_term
        c = c.reshape(N, K, LM)

        # p_{k k' l} for the lower triangle k' <= k, in gap_fit's layout
        v = np.zeros((N, D))
        v[:, :-1] = power_spectrum(c, self._kk, self._kp, self._scale)
        if self.normalise:
            norm = np.sqrt(np.einsum("nd,nd->n", v, v))
            norm[norm == 0.0] = 1.0  # an empty density (central_weight 0, no neighbours) stays 0
            x = v / norm[:, None]
        else:
            norm = np.ones(N)
            x = v.copy()
        x_unit = x.copy()  # v / |v| with trailing 0, for the normalisation derivative
        x[:, -1] = self.covariance_sigma0
        desc = Descriptors(x=x, weight=np.ones(N), centre=centres.copy())
        if not gradients:
            return desc

        dx_dr = soap_gradients(c, Y, dY, R, dR, u, r, owner, sp, self._kk, self._kp, self._scale,
                               x_unit, norm, bool(self.normalise), N)
        G = N + P
        pos = atoms.positions
        desc.grad_owner = np.concatenate([np.arange(N), owner])
        desc.grad_atom = np.concatenate([centres, j])
        desc.grad_position = np.concatenate([pos[centres], pos[i] + dvec])
        desc.dx_dr = dx_dr
        desc.dw_dr = np.zeros((G, 3))
        return desc
