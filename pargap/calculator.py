"""GAPCalculator: a fitted pargap potential as an ASE calculator."""

from ase.calculators.calculator import Calculator, all_changes

from pargap.potential import Potential


class GAPCalculator(Calculator):
    """ASE calculator for a pargap potential file (HDF5).

    >>> from pargap import GAPCalculator
    >>> atoms.calc = GAPCalculator("potential.h5")

    Properties: energy (eV), energies (eV per atom), forces (eV/Angstrom), stress (eV/Angstrom^3,
    Voigt order xx yy zz yz xz xy, ASE sign: stress = -virial / volume; periodic cells only).
    With ``variance=True`` (or through get_energy_variance / get_local_energy_variances) also the
    GP predictive variances energy_variance (eV^2) and energies_variance (eV^2 per atom), from the
    fit's factor stored in the file (see pargap.variance).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "energy_variance", "energies_variance"]
    default_parameters = {}

    def __init__(self, potential, variance=False, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential if isinstance(potential, Potential) else Potential.load(potential)
        self.variance = variance
        self._variance = None

    def get_energy_variance(self, atoms=None):
        """GP predictive variance of the total energy, eV^2."""
        return self.get_property("energy_variance", atoms)

    def get_local_energy_variances(self, atoms=None):
        """GP predictive variances of the per-atom energies, (n_atoms,) eV^2."""
        return self.get_property("energies_variance", atoms)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.potential.predict(self.atoms, gradients=True)
        self.results["energy"] = p["energy"]
        self.results["free_energy"] = p["energy"]
        self.results["energies"] = p["energies"]
        self.results["forces"] = p["forces"]
        if self.variance or {"energy_variance", "energies_variance"} & set(properties):
            if self._variance is None:
                from pargap.variance import PredictiveVariance

                self._variance = PredictiveVariance(self.potential)
            self.results.update(self._variance(self.atoms))
        if self.atoms.cell.rank == 3:
            W = p["virial"]
            s = -W / self.atoms.get_volume()
            self.results["stress"] = s.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a 3-D periodic cell")
