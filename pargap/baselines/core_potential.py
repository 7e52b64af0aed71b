"""A fixed baseline ("core") potential, subtracted from the data before the fit and added back at
prediction (gap_fit's ``core_param_file`` + ``core_ip_args``).

Both supported forms are glue (embedded-atom) potentials; a pair table is the case without density:

    E = sum_i F_{t_i}(rho_i) + 1/2 sum_i sum_{j != i} V_{t_i t_j}(r_ij),
    rho_i = sum_{j != i} phi_{t_j}(r_ij)

* ``IP Glue``: QUIP's IPModel_Glue read from its XML (``<Glue_params>``), as QUIP evaluates it:
  ``per_type_data`` (``atomic_num``, ``type``) holds the density ``phi`` (``<density>``: points
  a, rho; without ``do_spline="T"`` QUIP uses the least-squares fit ``c (r_c - r)^3`` with r_c the
  last point, which is what is done here too) and the embedding ``F`` (``<potential_density>``:
  points rho, E; spline end slopes y1/yn, natural when absent); ``per_pair_data`` (type1, type2)
  holds ``V`` (``<potential_pair>``: points r, E; end slopes y1/yn, default 0). phi acts for
  r < its last point, V for r < its last point. Species not in the file contribute nothing.
* ``pair_table`` (pargap's own): a text file of ``pair <Z1|symbol> <Z2|symbol>`` headers, each
  followed by lines ``r V`` (Angstrom, eV), ``#`` comments. V is the cubic spline through the
  points, natural (V'' = 0) at the first point and with V' = 0 at the last one, where V must be 0:
  energy and force go smoothly to zero at the cutoff (the last r).

Splines are QUIP's (libAtoms Spline, after Numerical Recipes): the cubic spline through the
points with the given end slopes, an end slope above 0.99e30 meaning a natural end; outside the
points it continues linearly with the end slope. Units: Angstrom, eV; forces eV/A; virial eV
(W = -dE/d strain, gap_fit's sign). Serial numpy on one ase.Atoms; no MPI.
"""

import os
import xml.etree.ElementTree as ET

import numpy as np

from pargap.errors import ConfigError, InputError
from pargap.settings.config import parse_ip_args

KINDS = ("glue", "pair_table")
NATURAL = 0.99e30  # QUIP: an end slope above this means a zero second derivative there


class Spline:
    """QUIP's cubic spline through (x, y) (sorted here) with end slopes yp1, ypn."""

    def __init__(self, x, y, yp1=2e30, ypn=2e30):
        from scipy.interpolate import CubicSpline

        order = np.argsort(x, kind="stable")
        self.x = np.asarray(x, dtype=float)[order]
        self.y = np.asarray(y, dtype=float)[order]
        if len(self.x) < 2 or np.any(np.diff(self.x) <= 0):
            raise ValueError("a spline needs at least two distinct points")
        bc = tuple((2, 0.0) if s > NATURAL else (1, float(s)) for s in (yp1, ypn))
        self._cs = CubicSpline(self.x, self.y, bc_type=bc)
        self.yp1, self.ypn = float(self._cs(self.x[0], 1)), float(self._cs(self.x[-1], 1))

    @property
    def last(self):
        return self.x[-1]

    def __call__(self, r):
        """(value, derivative) at r (any shape); linear beyond the end points."""
        r = np.asarray(r, dtype=float)
        v, dv = self._cs(r), self._cs(r, 1)
        lo, hi = r < self.x[0], r > self.x[-1]
        v = np.where(lo, self.y[0] + (r - self.x[0]) * self.yp1, v)
        v = np.where(hi, self.y[-1] + (r - self.x[-1]) * self.ypn, v)
        dv = np.where(lo, self.yp1, np.where(hi, self.ypn, dv))
        return v, dv


class CubeDensity:
    """QUIP's glue density without do_spline: phi(r) = c (r_c - r)^3 for r < r_c, c fitted by
    least squares to the points, r_c their largest a."""

    def __init__(self, a, rho):
        a, rho = np.asarray(a, float), np.asarray(rho, float)
        self.last = float(a.max())
        u = (self.last - a) ** 3
        self.c = float(rho @ u / (u @ u))

    def __call__(self, r):
        s = self.last - np.asarray(r, dtype=float)
        return self.c * s ** 3, -3.0 * self.c * s ** 2


class CorePotential:
    """Glue/pair baseline. pair: {(Z1, Z2): Spline} (both orders); density: {Z: phi};
    embedding: {Z: Spline}. kind, text, ip_args and source (file name) keep where it came from, so
    the potential file can store it and rebuild the same object (:meth:`from_text`)."""

    def __init__(self, pair, density=None, embedding=None, kind="pair_table", text="", ip_args="", source=None):
        self.pair = dict(pair)
        for (a, b), s in list(self.pair.items()):
            self.pair.setdefault((b, a), s)
        self.density = dict(density or {})
        self.embedding = dict(embedding or {})
        self.kind, self.text, self.ip_args, self.source = kind, text, ip_args, source
        cuts = [s.last for s in self.pair.values()] + [d.last for d in self.density.values()]
        self.cutoff = max(cuts, default=0.0)

    @property
    def species(self):
        return sorted({z for pair in self.pair for z in pair} | set(self.density) | set(self.embedding))

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_text(cls, kind, text, ip_args="", source=None):
        if kind == "glue":
            return cls._from_glue_xml(text, ip_args, source)
        if kind == "pair_table":
            return cls._from_pair_table(text, ip_args, source)
        raise ConfigError(f"unknown core potential kind '{kind}'; supported: {', '.join(KINDS)}")

    @classmethod
    def from_file(cls, path, ip_args):
        """The core of gap_fit's ``core_param_file=path core_ip_args=ip_args``."""
        kind, _ = parse_ip_args(ip_args)
        if not os.path.exists(path):
            raise InputError("core_param_file not found", file=path, key="core_param_file")
        with open(path) as fh:
            text = fh.read()
        return cls.from_text(kind, text, ip_args, source=path)

    @classmethod
    def _from_pair_table(cls, text, ip_args, source):
        from ase.data import atomic_numbers

        def species(tok, n):
            z = int(tok) if tok.isdigit() else atomic_numbers.get(tok)
            if not z:
                raise InputError(f"line {n}: unknown species '{tok}'", file=source)
            return z

        blocks, current = {}, None
        for n, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0].lower() == "pair":
                if len(words) != 3:
                    raise InputError(f"line {n}: expected 'pair Z1 Z2'", file=source)
                current = tuple(sorted((species(words[1], n), species(words[2], n))))
                if current in blocks:
                    raise InputError(f"line {n}: a second table for the pair {current}", file=source)
                blocks[current] = []
            elif current is None:
                raise InputError(f"line {n}: values before the first 'pair Z1 Z2' header", file=source)
            else:
                try:
                    r, v = (float(w) for w in words)
                except ValueError:
                    raise InputError(f"line {n}: expected two numbers 'r V', got '{line.strip()}'",
                                     file=source) from None
                blocks[current].append((r, v))
        if not blocks:
            raise InputError("no 'pair Z1 Z2' table in the pair-table file", file=source)
        pair = {}
        for key, points in blocks.items():
            r, v = np.array(points).T if points else (np.zeros(0), np.zeros(0))
            if len(r) < 3 or np.any(np.diff(r) <= 0) or r[0] <= 0:
                raise InputError(f"pair {key}: needs at least 3 points with increasing r > 0", file=source)
            if v[-1] != 0.0:
                raise InputError(f"pair {key}: V must be 0 at the last point (r = {r[-1]}), got {v[-1]}",
                                 file=source)
            pair[key] = Spline(r, v, 2e30, 0.0)
        return cls(pair, kind="pair_table", text=text, ip_args=ip_args, source=source)

    @classmethod
    def _from_glue_xml(cls, text, ip_args, source):
        _, options = parse_ip_args(ip_args)
        label = options.get("label", "")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise InputError(f"not valid XML ({exc})", file=source) from None
        blocks = [root] if root.tag == "Glue_params" else root.iter("Glue_params")
        chosen = None
        for block in blocks:
            if not label or block.get("label", "") == label:
                chosen = block
                if label:
                    break
        if chosen is None:
            raise InputError(f"no <Glue_params{' label=' + label if label else ''}> in the XML", file=source)

        def num(element, key, default=None):
            value = element.get(key)
            if value is None:
                if default is None:
                    raise InputError(f"<{element.tag}> has no attribute '{key}'", file=source)
                return default
            try:
                return float(value)
            except ValueError:
                raise InputError(f"<{element.tag}> {key}={value!r} is not a number", file=source) from None

        def points(element, xkey, ykey):
            pts = [(num(p, xkey), num(p, ykey)) for p in element.iter("point")]
            if len(pts) != int(num(element, "num_points")) or len(pts) < 2:
                raise InputError(f"<{element.tag}>: num_points={element.get('num_points')} but "
                                 f"{len(pts)} points", file=source)
            if len({x for x, _ in pts}) != len(pts):
                raise InputError(f"<{element.tag}>: two points at the same {xkey}", file=source)
            return np.array(pts).T

        z_of_type, density, embedding = {}, {}, {}
        for ptd in chosen.iter("per_type_data"):
            z = int(num(ptd, "atomic_num"))
            z_of_type[int(num(ptd, "type"))] = z
            for el in ptd:
                if el.tag == "density":
                    a, rho = points(el, "a", "rho")
                    if el.get("do_spline", "F").strip().lower() in ("t", "true", "1"):
                        density[z] = Spline(a, rho, num(el, "density_y1"), num(el, "density_yn"))
                    else:
                        density[z] = CubeDensity(a, rho)
                elif el.tag == "potential_density":
                    rho, e = points(el, "rho", "E")
                    embedding[z] = Spline(rho, e, num(el, "y1", 2e30), num(el, "yn", 2e30))
                elif el.tag == "potential_neighbours":
                    raise InputError("<potential_neighbours> is not supported (give potential_density)",
                                     file=source)
        pair = {}
        for ppd in chosen.iter("per_pair_data"):
            t1, t2 = int(num(ppd, "type1")), int(num(ppd, "type2"))
            if t1 not in z_of_type or t2 not in z_of_type:
                raise InputError(f"per_pair_data type1={t1} type2={t2}: no per_type_data of that type",
                                 file=source)
            for el in ppd.iter("potential_pair"):
                r, e = points(el, "r", "E")
                pair[(z_of_type[t1], z_of_type[t2])] = Spline(r, e, num(el, "y1", 0.0), num(el, "yn", 0.0))
        if not z_of_type:
            raise InputError("<Glue_params> has no per_type_data", file=source)
        return cls(pair, density, embedding, kind="glue", text=text, ip_args=ip_args, source=source)

    # ---- evaluation ----------------------------------------------------------------------------
    def calculate(self, atoms, gradients=True):
        """{"energy": eV, "energies": (n,) eV, "forces": (n, 3) eV/A, "virial": (3, 3) eV}
        (forces and virial only with gradients)."""
        from pargap.descriptors.neighbours import neighbour_list

        n = len(atoms)
        Z = atoms.numbers
        local = np.zeros(n)
        if self.cutoff > 0:
            i, j, d, D = neighbour_list(atoms, self.cutoff)
        else:
            i, j, d, D = (np.zeros(0, int),) * 2 + (np.zeros(0), np.zeros((0, 3)))
        g = np.zeros(len(d))  # dE/dr_ij of each ordered pair (i, j)
        rho = np.zeros(n)
        dphi = np.zeros(len(d))
        for z, phi in self.density.items():
            sel = (Z[j] == z) & (d < phi.last)
            value, dphi[sel] = phi(d[sel])
            np.add.at(rho, i[sel], value)
        dF = np.zeros(n)  # F'(rho_i)
        for z, F in self.embedding.items():
            mine = Z == z
            local[mine], dF[mine] = F(rho[mine])
        g += dF[i] * dphi
        for (za, zb), V in self.pair.items():
            sel = (Z[i] == za) & (Z[j] == zb) & (d < V.last)
            value, dV = V(d[sel])
            np.add.at(local, i[sel], 0.5 * value)
            g[sel] += 0.5 * dV
        out = {"energy": float(local.sum()), "energies": local}
        if gradients:
            G = (g / np.where(d > 0, d, 1.0))[:, None] * D  # dE/dD for each pair vector D = r_j - r_i
            forces = np.zeros((n, 3))
            np.add.at(forces, i, G)
            np.add.at(forces, j, -G)
            virial = -D.T @ G
            out["forces"] = forces
            out["virial"] = 0.5 * (virial + virial.T)
        return out

    def hessian_eigenvalue(self, atoms, eigenvector, delta):
        """e^T H e along the unit vector e (n, 3) by central differences of the forces with step
        delta (Angstrom), as the GP's Hessian rows: e . (F(r0 - D e) - F(r0 + D e)) / (2 D), eV/A^2."""
        forces = []
        for sign in (-1.0, 1.0):
            moved = atoms.copy()
            moved.positions = atoms.positions + sign * delta * eigenvector
            forces.append(self.calculate(moved)["forces"])
        return float(np.sum(eigenvector * (forces[0] - forces[1])) / (2.0 * delta))


def load_core(settings):
    """The fit's baseline (CorePotential) from settings.core_param_file/core_ip_args, or None."""
    if not getattr(settings, "core_ip_args", None):
        return None
    return CorePotential.from_file(settings.core_param_file, settings.core_ip_args)


def core_targets(core, s, hessian_delta):
    """A Structure's observations minus the baseline: (energy eV, forces (n, 3) eV/A, virial
    (3, 3) eV, [(Hessian eigenvalue eV/A^2, eigenvector)]), each None/empty where s has none.
    The eigenvalue loses e^T H_core e by central differences of core forces (step hessian_delta),
    the same finite difference as the GP's Hessian rows."""
    if core is None:
        return s.energy, s.forces, s.virial, s.hessian
    c = core.calculate(s.atoms, gradients=s.forces is not None or s.virial is not None)
    return (
        None if s.energy is None else s.energy - c["energy"],
        None if s.forces is None else s.forces - c["forces"],
        None if s.virial is None else s.virial - c["virial"],
        [(value - core.hessian_eigenvalue(s.atoms, v, hessian_delta), v) for value, v in s.hessian],
    )


__all__ = ["CorePotential", "Spline", "core_targets", "load_core"]
