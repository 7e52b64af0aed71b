"""Training data: read structures, extract observations and their noise, validate.

Conventions are gap_fit's (GAPFIT_MATH.md section 0 and 6): keys are looked up
case-insensitively; ``stress`` stands in for a missing virial (W = -stress * volume); energy and
virial sigmas are multiplied by sqrt(N_atoms) when ``sigma_per_atom``; per-structure keys
``energy_sigma``, ``force_sigma``, ``virial_sigma`` and per-atom ``force_atom_sigma`` or
``force_component_sigma`` (and ``virial_component_sigma``) override the defaults and are
absolute; atoms with ``force_mask`` true have no force rows.
Units: eV, Angstrom, eV/Angstrom; virial in eV. Serial code; MPI is in :mod:`pargap.fitting.fit`.
"""

import hashlib
import io
import math
import os
from dataclasses import dataclass, field

import numpy as np

from pargap.data.fields import lookup, validated_array
from pargap.data.local_property import local_property_observations
from pargap.errors import InputError

XYZ_SUFFIXES = (".xyz", ".extxyz")


@dataclass
class Structure:
    """One training structure and its observations.

    index: position in the input file (0-based). energy: eV or None. forces: (n, 3) eV/A or None.
    virial: (3, 3) eV, symmetrised, or None. sigma_energy: eV; sigma_forces: (n, 3) eV/A;
    sigma_virial: (3, 3) eV (already scaled by sqrt(n) where sigma_per_atom says so).
    hessian: [(eigenvalue eV/A^2, unit eigenvector (n, 3))], gap_fit's n_hessian/hessianK keys;
    sigma_hessian: eV/A^2 (never scaled by the number of atoms).
    charges: ESP values and total charge for charge models (read only when the settings have some).
    local_property: per-atom targets of a local-property fit
    (:class:`pargap.data.local_property.LocalPropertyObservations`) or None.
    """

    index: int
    atoms: object
    config_type: str
    energy: float | None
    forces: np.ndarray | None
    virial: np.ndarray | None
    sigma_energy: float
    sigma_forces: np.ndarray | None
    sigma_virial: np.ndarray | None
    hessian: list = field(default_factory=list)
    sigma_hessian: float = 0.0
    charges: object = None  # pargap.data.esp.ChargeObservations (ESP, total charge) or None
    local_property: object = None  # pargap.data.local_property.LocalPropertyObservations or None

    @property
    def n_atoms(self):
        return len(self.atoms)

    @property
    def n_rows(self):
        """Observation rows this structure contributes."""
        return (self.energy is not None) + 3 * self.n_atoms * (self.forces is not None) + 6 * (
            self.virial is not None
        ) + len(self.hessian) + (self.local_property.n_rows if self.local_property is not None else 0)


# ---- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FrameIndex:
    """Where each frame of a file is: byte offsets (None for non-XYZ formats) and atom counts.

    offsets is indexed by frame number: a sequence of all of them, or a dict holding only some
    (those a rank reads, and the start of the frame after each); n_atoms holds every frame's."""

    path: str
    offsets: tuple | dict | None
    n_atoms: tuple

    def __len__(self):
        return len(self.n_atoms)


def scan_frames(path):
    """Index the frames of a file without parsing them (extended XYZ: line counting only)."""
    check_file(path)
    if not path.lower().endswith(XYZ_SUFFIXES):  # other formats: one pass, one frame in memory at a time
        return FrameIndex(path, None, tuple(len(a) for _, a in _iread_with_ase(path)))
    offsets, counts, _ = scan_range(path, 0)
    if not counts:
        raise InputError("file has no structures", file=path)
    return FrameIndex(path, tuple(offsets), tuple(counts))


def check_file(path):
    """InputError unless path is an existing, non-empty file."""
    if not os.path.exists(path):
        raise InputError("no such file", file=path)
    if os.path.getsize(path) == 0:
        raise InputError("file is empty: no structures", file=path)


def scan_range(path, start, stop=None, first=0):
    """The frames of an extended XYZ file that start in bytes [start, stop) (stop None: to the
    end), ``start`` being a frame start -> (offsets, atom counts, end): ``end`` is where the next
    frame starts (or the file's size). ``first`` numbers the first frame in messages."""
    offsets, counts = [], []
    with open(path, "rb") as fh:
        fh.seek(start)
        frame = first
        while True:
            here = fh.tell()
            line = fh.readline()
            if line and not line.strip():
                continue  # blank lines between frames
            if not line or (stop is not None and here >= stop):
                return offsets, counts, here
            try:
                n = int(line.split()[0])
                if n < 1 or len(line.split()) != 1:
                    raise ValueError
            except ValueError:
                if counts:  # the previous frame's atom count does not match its atom lines
                    raise InputError(
                        f"its atom count ({counts[-1]}) does not match its atom lines: the line after them, "
                        f"{line[:60].decode(errors='replace')!r}, is not the atom count of a next frame",
                        file=path, structure=frame - 1,
                    ) from None
                raise InputError(
                    f"expected the atom count of a frame, found {line[:60].decode(errors='replace')!r}",
                    file=path, structure=frame,
                ) from None
            for k in range(n + 1):
                if not fh.readline():
                    raise InputError(
                        f"file ends inside this frame: it declares {n} atoms, found {max(k - 1, 0)}",
                        file=path, structure=frame,
                    )
            offsets.append(here)
            counts.append(n)
            frame += 1


def next_count_line(path, offset):
    """Start of the first line at or after byte ``offset`` that could open a frame (a single
    positive integer), or the file's size. A guess, for scanning a file in byte ranges: it must
    be confirmed by the scan of the range before it."""
    with open(path, "rb") as fh:
        if offset > 0:
            fh.seek(offset - 1)
            fh.readline()  # to the start of the next line
        while True:
            here = fh.tell()
            line = fh.readline()
            if not line:
                return here
            words = line.split()
            if len(words) == 1 and words[0].isdigit() and int(words[0]) > 0:
                return here


def block_digest(path, start, length):
    """SHA-256 digest (32 bytes) of ``length`` bytes of a file from byte ``start``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.digest()


def _read_with_ase(source, index, path=None, structure=None):
    """ase.io.read of one extended-XYZ frame (a text stream) on this rank only (ASE would otherwise
    broadcast from rank 0 under MPI)."""
    import ase.io

    try:
        return ase.io.read(source, index=index, format="extxyz", parallel=False)
    except InputError:
        raise
    except Exception as exc:  # ASE raises many types for malformed input
        raise InputError(f"cannot parse: {exc}", file=path or source, structure=structure) from None


def _iread_with_ase(path):
    """(index, ase.Atoms) of every frame of a file in a format other than extended XYZ, parsed one
    at a time (ase.io.iread) on this rank only."""
    import ase.io

    frames = ase.io.iread(path, index=":", parallel=False)
    k = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ASE raises many types for malformed input
            raise InputError(f"cannot parse: {exc}", file=path, structure=k) from None
        yield k, atoms
        k += 1


def read_frames(index, which):
    """Parse the frames ``which`` (global indices) of an indexed file; returns ase.Atoms list.
    Extended XYZ: each frame is read at its byte offset; other formats: one pass over the file,
    keeping only the frames asked for."""
    if index.offsets is None:
        wanted = set(int(i) for i in which)
        kept = {k: atoms for k, atoms in _iread_with_ase(index.path) if k in wanted}
        return [kept[i] for i in which]
    out = []
    with open(index.path, "rb") as fh:
        for i in which:
            fh.seek(index.offsets[i])
            end = index.offsets[i + 1] if i + 1 < len(index) else None
            text = fh.read() if end is None else fh.read(end - index.offsets[i])
            atoms = _read_with_ase(io.StringIO(text.decode()), 0, index.path, i)
            if len(atoms) != index.n_atoms[i]:
                raise InputError("frame could not be parsed completely", file=index.path, structure=i)
            out.append(atoms)
    return out


def to_virial(stress, volume):
    """Virial (3, 3) eV from a stress (eV/A^3; 9 numbers or Voigt xx yy zz yz xz xy): W = -stress V."""
    s = np.asarray(stress, dtype=float).ravel()
    if s.size == 6:
        xx, yy, zz, yz, xz, xy = s
        s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return -s.reshape(3, 3) * volume


def extract(atoms, index, settings, file, check_sigma=True):
    """Observations and noise of one structure (``settings``: FitSettings). ``check_sigma=False``
    (evaluation) skips the noise checks, which only a fit needs."""
    n = len(atoms)
    hessian = hessian_observations(atoms, index, file, settings.hessian_parameter_name)
    local_property = local_property_observations(atoms, index, settings, file)
    charges = None
    if getattr(settings, "charge_gap", ()):  # charge-model observations (pargap.fitting.charges)
        from pargap.data.esp import charge_observations

        charges = charge_observations(atoms, index, settings, file)
    validated_array(atoms.positions, lambda a: a.shape == (n, 3), "positions", file, index, "pos")
    force_default = settings.force_parameter_name.endswith("forces")  # gap_fit's default name is force
    ekey, fkey = settings.energy_parameter_name, settings.force_parameter_name
    vkey, skey = settings.virial_parameter_name, settings.stress_parameter_name

    energy = lookup(atoms, ekey)
    if energy is not None:
        energy = float(validated_array(energy, lambda a: a.size == 1, "energy", file, index, ekey).ravel()[0])
    forces = lookup(atoms, fkey, per_atom=True)
    if forces is None and force_default:
        fkey = fkey[:-1]
        forces = lookup(atoms, fkey, per_atom=True)
    if forces is not None:
        forces = validated_array(forces, lambda a: a.shape == (n, 3), "forces", file, index, fkey)
    virial = lookup(atoms, vkey)
    if virial is not None:
        virial = validated_array(virial, lambda a: a.size == 9, "virial", file, index, vkey).reshape(3, 3)
    else:
        stress = lookup(atoms, skey)
        if stress is not None:
            stress = validated_array(stress, lambda a: a.size in (6, 9), "stress", file, index, skey)
            if atoms.cell.rank != 3:
                raise InputError("stress given for a structure without a 3-D cell", file=file, structure=index, key=skey)
            virial = to_virial(stress, atoms.get_volume())
    if virial is not None:
        virial = 0.5 * (virial + virial.T)
    if energy is not None and local_property is not None:
        raise InputError("a structure may have an energy or a local property, not both (as in gap_fit)",
                         file=file, structure=index, key=settings.local_property_parameter_name)
    if energy is None and forces is None and virial is None and not hessian and charges is None \
            and local_property is None:
        keys = [ekey, settings.force_parameter_name, vkey, skey, settings.local_property_parameter_name]
        if settings.charge_gap:
            keys += [settings.esp_parameter_name, settings.total_charge_parameter_name]
        raise InputError(
            "structure has no observations: none of the keys " + ", ".join(f"'{k}'" for k in keys)
            + " is present (set energy_parameter_name etc. to your file's keys)",
            file=file, structure=index, key=settings.esp_parameter_name if not settings.gap else ekey,
        )

    ckey = settings.config_type_parameter_name
    config_type = lookup(atoms, ckey)
    config_type = "default" if config_type is None else str(config_type)
    sE, sF, sV, sH = settings.config_type_sigma.get(config_type, settings.default_sigma)
    scale = math.sqrt(n) if settings.sigma_per_atom else 1.0
    sigma_energy, sigma_virial = sE * scale, np.full((3, 3), sV * scale)
    sigma_forces = np.full((n, 3), float(sF))
    suffix = "_" + settings.sigma_parameter_name

    def positive(value, key, shape_ok, what):
        arr = validated_array(value, shape_ok, what, file, index, key)
        if np.any(arr <= 0):
            raise InputError(f"{what} must be positive", file=file, structure=index, key=key)
        return arr

    if (v := lookup(atoms, "energy" + suffix)) is not None:
        sigma_energy = float(positive(v, "energy" + suffix, lambda a: a.size == 1, "energy sigma").ravel()[0])
    if (v := lookup(atoms, "virial" + suffix)) is not None:
        sigma_virial[:] = float(positive(v, "virial" + suffix, lambda a: a.size == 1, "virial sigma").ravel()[0])
    if (v := lookup(atoms, "force" + suffix)) is not None:
        sigma_forces[:] = float(positive(v, "force" + suffix, lambda a: a.size == 1, "force sigma").ravel()[0])
    if (v := lookup(atoms, "force_atom" + suffix, per_atom=True)) is not None:
        sigma_forces[:] = positive(v, "force_atom" + suffix, lambda a: a.shape == (n,), "per-atom force sigma")[:, None]
    if (v := lookup(atoms, "force_component" + suffix, per_atom=True)) is not None:
        sigma_forces[:] = positive(v, "force_component" + suffix, lambda a: a.shape == (n, 3), "force sigma")
    if (v := lookup(atoms, "virial_component" + suffix)) is not None:
        v = positive(v, "virial_component" + suffix, lambda a: a.size == 9, "virial sigma").reshape(3, 3)
        sigma_virial = 0.5 * (v + v.T)
    mkey = settings.force_mask_parameter_name
    if (v := lookup(atoms, mkey, per_atom=True)) is not None:
        # gap_fit leaves masked atoms out of the force rows; an infinite sigma zeroes their rows
        mask = np.asarray(v, dtype=bool).reshape(-1)
        if mask.shape != (n,):
            raise InputError(f"force mask has shape {np.shape(v)}", file=file, structure=index, key=mkey)
        sigma_forces[mask] = np.inf
    sigma_hessian = float(sH)
    if (v := lookup(atoms, "hessian" + suffix)) is not None:
        sigma_hessian = float(positive(v, "hessian" + suffix, lambda a: a.size == 1, "hessian sigma").ravel()[0])
    if not check_sigma:
        return Structure(index, atoms, config_type, energy, forces, virial, sigma_energy,
                         sigma_forces if forces is not None else None,
                         sigma_virial if virial is not None else None, hessian, sigma_hessian, charges,
                         local_property)
    for name, used, sig in (("energy", energy, sigma_energy), ("force", forces, sigma_forces),
                            ("virial", virial, sigma_virial), ("hessian", hessian or None, sigma_hessian)):
        if used is not None and np.any(np.asarray(sig) <= 0):
            raise InputError(
                f"{name} sigma is zero for config_type '{config_type}' (set default_sigma/config_type_sigma)",
                file=file, structure=index, key=name + suffix,
            )
    return Structure(index, atoms, config_type, energy, forces, virial, sigma_energy,
                     sigma_forces if forces is not None else None,
                     sigma_virial if virial is not None else None, hessian, sigma_hessian, charges,
                     local_property)


def hessian_observations(atoms, index, file, name="hessian"):
    """gap_fit's Hessian convention (``name``: hessian_parameter_name): info ``n_<name>`` = k,
    eigenvalues in info ``<name>1..k`` (eV/A^2), eigenvectors as per-atom 3-vectors ``<name>1..k``
    (normalised here). Returns [(eigenvalue, eigenvector (n, 3))]."""
    count = lookup(atoms, f"n_{name}")
    if count is None:
        return []
    n = len(atoms)
    count = validated_array(count, lambda a: a.size == 1, f"n_{name}", file, index, f"n_{name}").ravel()[0]
    out = []
    for k in range(1, int(count) + 1):
        key = f"{name}{k}"
        value = lookup(atoms, key)
        vector = lookup(atoms, key, per_atom=True)
        if value is None or vector is None or np.ndim(vector) != 2:
            raise InputError(f"n_{name}={int(count)} but eigenvalue (info) or eigenvector (per-atom) "
                             f"'{key}' is missing", file=file, structure=index, key=key)
        value = float(validated_array(value, lambda a: a.size == 1, "Hessian eigenvalue", file, index, key).ravel()[0])
        vector = validated_array(vector, lambda a: a.shape == (n, 3), "Hessian eigenvector", file, index, key)
        norm = np.linalg.norm(vector)
        if norm == 0:
            raise InputError("Hessian eigenvector is zero", file=file, structure=index, key=key)
        out.append((value, vector / norm))
    return out



def read_template(path):
    """gap_fit's template_file: a structure file (read by ASE) -> ase.Atoms (its first frame).
    Errors name the file."""
    if not os.path.exists(path):
        raise InputError("template_file: no such file", file=path)
    return _read_with_ase(path, 0)
