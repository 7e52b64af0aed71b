"""pargap: Gaussian Approximation Potentials fitted in parallel with MPI.

The fitted potential is a plain HDF5 file; :class:`GAPCalculator` loads it as an ASE calculator.
"""

from pargap.version import __version__


def __getattr__(name):
    # Lazy, so that `import pargap` stays light (no h5py/ase import until needed).
    if name == "GAPCalculator":
        from pargap.potential.calculator import GAPCalculator

        return GAPCalculator
    if name == "Potential":
        from pargap.potential.potential import Potential

        return Potential
    raise AttributeError(name)
