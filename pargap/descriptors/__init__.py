"""Descriptors of atomic neighbourhoods: values, cutoff weights and their gradients.

Every descriptor class takes keyword-only hyperparameters and has
``compute(atoms, gradients=False) -> Descriptors``. Descriptor code is serial numpy over one
structure; it never touches MPI.
"""

import importlib

from pargap.descriptors.base import Descriptors, cutoff_function
from pargap.descriptors.distance_2b import Distance2b

DESCRIPTORS = {
    "distance_2b": "pargap.descriptors.distance_2b:Distance2b",
    "angle_3b": "pargap.descriptors.angle_3b:Angle3b",
    "soap": "pargap.descriptors.soap:Soap",
}

__all__ = ["Descriptors", "cutoff_function", "Distance2b", "DESCRIPTORS", "make_descriptor"]


def make_descriptor(name, **params):
    """Build a descriptor from its gap_fit name (``distance_2b``, ``angle_3b``, ``soap``) and settings."""
    from pargap.errors import ConfigError

    try:
        module, cls = DESCRIPTORS[name].split(":")
    except KeyError:
        raise ConfigError(
            f"unknown descriptor '{name}'; supported: {', '.join(sorted(DESCRIPTORS))}"
        ) from None
    try:
        return getattr(importlib.import_module(module), cls)(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"descriptor {name}: {exc}") from None
