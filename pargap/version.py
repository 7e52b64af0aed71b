"""The package version, recorded in every potential file (provenance)."""

__version__ = "0.1.0"
