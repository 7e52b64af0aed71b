"""ESP and total-charge observations of one structure, read and validated (the charge model's data).

Data convention (extended XYZ, keys configurable in the settings): info ``esp_points``
(3K floats, Angstrom, x1 y1 z1 x2 ...; a (K, 3) array is accepted too), ``esp_values`` (K, volts)
and ``total_charge`` (e). A structure with a total charge but no ESP contributes just that row.
ESP observations need a non-periodic structure (the 1/r sum is not defined for a periodic one).
"""

from dataclasses import dataclass

import numpy as np

from pargap.data.fields import lookup, validated_array
from pargap.errors import InputError

MIN_DISTANCE = 0.1
"""ESP points closer than this to an atom (Angstrom) are errors: 1/r would dominate the fit."""


@dataclass
class ChargeObservations:
    """The charge-model observations of one structure.

    points (K, 3) Angstrom and esp (K,) V (K may be 0); total_charge e or None; sigma_esp (V) and
    sigma_total_charge (e) their noise."""

    points: np.ndarray
    esp: np.ndarray
    total_charge: float | None
    sigma_esp: float
    sigma_total_charge: float

    @property
    def n_rows(self):
        return len(self.esp) + (self.total_charge is not None)


def charge_observations(atoms, index, settings, file):
    """Read and validate the ESP and total charge of one structure (ase.Atoms) -> ChargeObservations,
    or None when it has neither. Errors name the file, the structure and the key."""
    pkey, vkey = settings.esp_points_parameter_name, settings.esp_parameter_name
    qkey = settings.total_charge_parameter_name
    points, values, total = lookup(atoms, pkey), lookup(atoms, vkey), lookup(atoms, qkey)
    if points is None and values is None and total is None:
        return None
    if (points is None) != (values is None):
        missing, present = (vkey, pkey) if values is None else (pkey, vkey)
        raise InputError(f"ESP data incomplete: '{present}' is given but '{missing}' is missing",
                         file=file, structure=index, key=missing)
    if points is None:
        points, values = np.zeros((0, 3)), np.zeros(0)
    else:
        points = validated_array(points, lambda a: a.size % 3 == 0 and a.size > 0, "ESP points (3K numbers)",
                        file, index, pkey).reshape(-1, 3)
        K = len(points)
        values = validated_array(values, lambda a: a.size == K, f"ESP values (expected {K}, one per point)",
                        file, index, vkey).reshape(K)
        if atoms.pbc.any():
            raise InputError("ESP data given for a periodic structure (the 1/r sum needs a molecule: "
                             "set pbc to F)", file=file, structure=index, key=pkey)
        closest = np.min(np.linalg.norm(points[:, None, :] - atoms.positions[None, :, :], axis=-1))
        if closest < MIN_DISTANCE:
            raise InputError(f"an ESP point lies {closest:.3g} Angstrom from an atom (minimum {MIN_DISTANCE})",
                             file=file, structure=index, key=pkey)
    if total is not None:
        total = float(validated_array(total, lambda a: a.size == 1, "total charge", file, index, qkey).ravel()[0])
    suffix = "_" + settings.sigma_parameter_name
    sigmas = []
    for key, default in (("esp" + suffix, settings.esp_sigma), ("total_charge" + suffix, settings.total_charge_sigma)):
        value = lookup(atoms, key)
        if value is not None:
            value = float(validated_array(value, lambda a: a.size == 1, key, file, index, key).ravel()[0])
            if not value > 0:
                raise InputError(f"{key} must be positive, got {value}", file=file, structure=index, key=key)
        sigmas.append(default if value is None else value)
    return ChargeObservations(points, values, total, *sigmas)
