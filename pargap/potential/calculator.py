"""GAPCalculator: a fitted pargap potential as an ASE calculator."""

from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from pargap.potential.potential import Potential


class GAPCalculator(Calculator):
    """ASE calculator for a pargap potential file (HDF5).

    >>> from pargap import GAPCalculator
    >>> atoms.calc = GAPCalculator("potential.h5")

    Properties: energy (eV), energies (eV per atom), forces (eV/Angstrom), stress (eV/Angstrom^3,
    Voigt order xx yy zz yz xz xy, ASE sign: stress = -virial / volume; periodic cells only);
    charges (e) for a potential with charge models (:mod:`pargap.potential.charges`), and
    :meth:`get_electrostatic_potential` (V). A potential with charge models only has no energy.
    Parameter total_charge (e, default None): if set, the predicted charges sum to it exactly
    (see :func:`pargap.potential.charges.predict_charges`), e.g. ``GAPCalculator("q.h5", total_charge=0)``.
    With ``variance=True`` (or through get_energy_variance / get_local_energy_variances) also the
    GP predictive variances energy_variance (eV^2) and energies_variance (eV^2 per atom), from the
    fit's factor stored in the file (see pargap.potential.variance).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "charges",
                              "energy_variance", "energies_variance"]
    default_parameters = {"total_charge": None}

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
        if self.potential.charge_models:
            from pargap.potential.charges import predict_charges

            self.potential.baseline_energy(self.atoms.numbers)  # raises for unknown species
            self.results["charges"] = predict_charges(self.atoms, self.potential.charge_models,
                                                      self.parameters.get("total_charge"))
        elif "charges" in properties:
            raise PropertyNotImplementedError("charges need a potential with a charge model (charge_gap)")
        if not self.potential.models:
            if set(properties) - {"charges"}:
                raise PropertyNotImplementedError(
                    f"{sorted(set(properties) - {'charges'})}: this potential has charge models only")
            return
        p = self.potential.predict(self.atoms, gradients=True)
        self.results["energy"] = p["energy"]
        self.results["free_energy"] = p["energy"]
        self.results["energies"] = p["energies"]
        self.results["forces"] = p["forces"]
        if self.variance or {"energy_variance", "energies_variance"} & set(properties):
            if self._variance is None:
                from pargap.potential.variance import PredictiveVariance

                self._variance = PredictiveVariance(self.potential)
            self.results.update(self._variance(self.atoms))
        if self.atoms.cell.rank == 3:
            W = p["virial"]
            s = -W / self.atoms.get_volume()
            self.results["stress"] = s.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a 3-D periodic cell")

    def get_electrostatic_potential(self, atoms=None, points=None):
        """ESP Phi(r_k) = 14.399645 sum_a q_a / |r_k - r_a| in volts at points (K, 3) Angstrom, from
        the predicted charges (e) of ``atoms`` (default: the attached atoms). Returns (K,)."""
        import numpy as np

        from pargap.potential.charges import electrostatic_potential

        atoms = self.atoms if atoms is None else atoms
        if points is None:
            raise ValueError("get_electrostatic_potential needs points (K, 3) in Angstrom")
        charges = self.get_property("charges", atoms)
        return electrostatic_potential(np.asarray(points, dtype=float).reshape(-1, 3), atoms.positions, charges)
