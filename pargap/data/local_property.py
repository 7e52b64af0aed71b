"""Local-property observations: per-atom targets of a GAP (gap_fit's ``local_property``).

A local-property fit uses the same models as an energy fit, but each observation is the local
term of one atom, not the sum over the structure:

    p_a = p0(Z_a) + sum_{i centred on a} sum_m alpha_m w(x_i) k(x_i, s_m) w_m

so its row of K_NM is the per-atom ("local") row of :mod:`pargap.gp.observations`. Data
convention (gap_fit's): a per-atom column ``local_property`` (any name: local_property_parameter_name),
an optional per-atom logical column ``local_property_mask`` (true: the atom's value is fitted;
gap_fit's meaning, the opposite of force_mask), and the noise ``default_local_property_sigma``
(unit of the property; never scaled by the number of atoms), overridden per structure by the info
key ``local_property_<sigma_parameter_name>``. ``local_property0`` (one value, or per element) is
subtracted from the targets and added back on prediction. A structure may not have both an energy
and a local property (gap_fit refuses it too). Serial code.
"""

from dataclasses import dataclass

import numpy as np

from pargap.data.fields import lookup, validated_array
from pargap.errors import InputError


@dataclass
class LocalPropertyObservations:
    """values (n,) in the property's unit; fitted (n,) bool, the atoms whose value is a row;
    sigma: their noise."""

    values: np.ndarray
    fitted: np.ndarray
    sigma: float

    @property
    def n_rows(self):
        return int(self.fitted.sum())


def local_property_observations(atoms, index, settings, file):
    """The local property of one structure (ase.Atoms) -> LocalPropertyObservations, or None when
    it has none. Errors name the file, the structure and the key."""
    n = len(atoms)
    key = settings.local_property_parameter_name
    values = lookup(atoms, key, per_atom=True)
    if values is None:
        return None
    values = validated_array(values, lambda a: a.size == n, f"local property (expected {n} values, one per atom)",
                    file, index, key).reshape(n)
    mkey = settings.local_property_mask_parameter_name
    mask = lookup(atoms, mkey, per_atom=True)
    fitted = np.ones(n, dtype=bool)
    if mask is not None:
        fitted = np.asarray(mask).reshape(-1)
        if fitted.shape != (n,) or fitted.dtype != bool:
            raise InputError(f"local property mask must be one logical (T/F) per atom, got {np.shape(mask)} "
                             f"of {np.asarray(mask).dtype}", file=file, structure=index, key=mkey)
    skey = "local_property_" + settings.sigma_parameter_name
    sigma = lookup(atoms, skey)
    if sigma is None:
        sigma = settings.default_local_property_sigma
    else:
        sigma = validated_array(sigma, lambda a: a.size == 1, "local property sigma", file, index, skey)
        sigma = float(sigma.ravel()[0])
    if not sigma > 0:
        raise InputError(f"the local property sigma must be positive, got {sigma} (set "
                         "default_local_property_sigma)", file=file, structure=index, key=skey)
    return LocalPropertyObservations(values, fitted, float(sigma))


def local_property_rows(local, observations, offsets):
    """Rows [K | y] of the fitted atoms, divided by sigma: local (n, M) per-atom rows of the models,
    offsets (n,) local_property0 of each atom. Returns (A (k, M), b (k,))."""
    o = observations
    return local[o.fitted] / o.sigma, (o.values - offsets)[o.fitted] / o.sigma


def property_offsets(numbers, local_property0):
    """p0 of each atom (n,) from local_property0: None (zeros), one value for all species, or
    {element symbol: value} (unlisted elements get 0, as in gap_fit)."""
    numbers = np.asarray(numbers)
    if local_property0 is None:
        return np.zeros(len(numbers))
    if not isinstance(local_property0, dict):
        return np.full(len(numbers), float(local_property0))
    from ase.data import atomic_numbers

    by_z = np.zeros(max(int(numbers.max(initial=0)), max(atomic_numbers.values())) + 1)
    for symbol, value in local_property0.items():
        if symbol not in atomic_numbers:
            raise InputError(f"local_property0: unknown element symbol '{symbol}'")
        by_z[atomic_numbers[symbol]] = float(value)
    return by_z[numbers]
