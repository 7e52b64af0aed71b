"""Fields of an extended-XYZ frame: a key looked up as gap_fit does, and a value checked as an array."""

import numpy as np

from pargap.errors import InputError


def lookup(atoms, key, per_atom=False):
    """Value of ``key`` in info (or arrays if per_atom), falling back to the calculator's results.

    Exact name first, then case-insensitive (gap_fit matches keys case-insensitively)."""
    sources = [atoms.arrays] if per_atom else [atoms.info]
    if atoms.calc is not None:
        sources.append(getattr(atoms.calc, "results", {}))
    for src in sources:
        if key in src:
            return src[key]
    low = key.lower()
    for src in sources:
        for k, v in src.items():
            if k.lower() == low:
                return v
    return None


def validated_array(value, shape_ok, what, file, index, key):
    """``value`` as a float array, checked: numeric, ``shape_ok(array)`` true, finite. Errors name
    ``what``, the file, the structure (index) and the key."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{what} is not numeric: {value!r}", file=file, structure=index, key=key) from None
    if not shape_ok(arr):
        raise InputError(f"{what} has shape {arr.shape}", file=file, structure=index, key=key)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{what} contains NaN or infinity", file=file, structure=index, key=key)
    return arr
