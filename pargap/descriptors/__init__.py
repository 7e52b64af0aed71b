"""Descriptors of atomic neighbourhoods: values, cutoff weights and their gradients.

Every descriptor class takes keyword-only hyperparameters and has
``compute(atoms, gradients=False) -> Descriptors``. Descriptor code is serial numpy over one
structure; it never touches MPI.
"""

from pargap.descriptors.base import Descriptors, cutoff_function
from pargap.descriptors.distance_2b import Distance2b

DESCRIPTORS = {"distance_2b": Distance2b}

__all__ = ["Descriptors", "cutoff_function", "Distance2b", "DESCRIPTORS", "make_descriptor"]


def make_descriptor(name, **params):
    """Build a descriptor from its gap_fit name (e.g. ``distance_2b``) and parameters."""
    from pargap.errors import ConfigError

    try:
        cls = DESCRIPTORS[name]
    except KeyError:
        raise ConfigError(
            f"unknown descriptor '{name}'; supported: {', '.join(sorted(DESCRIPTORS))}"
        ) from None
    return cls(**params)
