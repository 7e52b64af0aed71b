"""GAPCalculator: a fitted pargap potential as an ASE calculator."""

from ase.calculators.calculator import Calculator, all_changes

from pargap.potential import Potential


class GAPCalculator(Calculator):
    """ASE calculator for a pargap potential file (HDF5).

    >>> from pargap import GAPCalculator
    >>> atoms.calc = GAPCalculator("potential.h5")

    Properties: energy (eV), energies (eV per atom), forces (eV/Angstrom), stress (eV/Angstrom^3,
    Voigt order xx yy zz yz xz xy, ASE sign: stress = -virial / volume; periodic cells only).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    default_parameters = {}

    def __init__(self, potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential if isinstance(potential, Potential) else Potential.load(potential)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.potential.predict(self.atoms, gradients=True)
        self.results["energy"] = p["energy"]
        self.results["free_energy"] = p["energy"]
        self.results["energies"] = p["energies"]
        self.results["forces"] = p["forces"]
        if self.atoms.cell.rank == 3:
            W = p["virial"]
            s = -W / self.atoms.get_volume()
            self.results["stress"] = s.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a 3-D periodic cell")
