"""A fitted GAP: models, coefficients and e0; prediction and the HDF5 file format.

    E = sum_a e0(Z_a) + E_core + sum_models sum_i sum_m alpha_m w(x_i) k(x_i, s_m) w_m

(E_core: the optional baseline potential, :mod:`pargap.baselines.core_potential`).

HDF5 layout (one file per potential, readable with plain h5py):

    /                     attrs: format="pargap-potential", format_version, pargap_version;
                          local_property (its key name) for a local-property fit, whose models
                          predict a per-atom property (e0 then holds local_property0)
    /e0                   datasets Z (S,) atomic numbers and e0 (S,) isolated-atom energies (eV)
    /models/<k>           k = 0, 1, ... in fit order; attrs: descriptor (name), kernel (name),
                          gap_index, and every descriptor/kernel hyperparameter as
                          attrs "descriptor.<name>" / "kernel.<name>"
    /models/<k>/alpha         (M,)   coefficients
    /models/<k>/sparse_x      (M, D) sparse descriptors
    /models/<k>/sparse_weight (M,)   cutoff weights of the sparse points (gap_fit's sparseCutoff)
    /charge_models/<k>    charge models (pargap.fitting.charges; alpha in 1/e), same layout as /models/<k>;
                          absent when the potential has none
    /gp                   optional (store_covariance): the GP posterior for the predictive variance;
                          attrs M (all models' sparse points) and sparse_jitter (eV^2)
    /gp/R_upper           (M (M+1) / 2,) the upper triangle of R, row by row (numpy triu order),
                          R^T R = K_MM + K_MN Lambda^-1 K_NM, columns in model order
    /settings             attrs: the fit's settings as TOML text ("toml")
    /provenance           attrs: date, host, ranks, pargap version, data file hashes
    /core                 only with a baseline potential; attrs: kind ("glue" or "pair_table"),
                          ip_args (gap_fit's core_ip_args), source (core_param_file as given)
    /core/text            string dataset: the core file's full text (QUIP glue XML or pair table)

A file name ending in .xml means QUIP's GAP XML instead (:mod:`pargap.potential.quip_xml`: what
quippy and LAMMPS read; it has no /gp and no charge models).
"""

import json
import os
import tempfile

import numpy as np

from pargap.descriptors import make_descriptor
from pargap.errors import InputError, PargapError
from pargap.gp.kernels import make_kernel
from pargap.gp.model import Model
from pargap.gp.prediction import Predictor
from pargap.version import __version__

FORMAT = "pargap-potential"
FORMAT_VERSION = 1


class Potential:
    """models: list of fitted :class:`Model`; e0: {Z: eV}; settings: TOML text; provenance: dict;
    core: the baseline :class:`~pargap.baselines.core_potential.CorePotential` or None; charge_models: fitted
    charge models (:mod:`pargap.fitting.charges`), possibly with no energy model; factor: optional (M, M)
    upper R of the fit (R^T R = K_MM + K_MN Lambda^-1 K_NM) and the sparse_jitter of K_MM, for the
    predictive variance (:mod:`pargap.potential.variance`)."""

    def __init__(self, models, e0, settings="", provenance=None, core=None, charge_models=(),
                 factor=None, sparse_jitter=None, local_property=None):
        self.core = core
        self.local_property = local_property
        self.models = list(models)
        self.charge_models = list(charge_models)
        self.e0 = {int(z): float(v) for z, v in e0.items()}
        self.settings = settings
        self.provenance = dict(provenance or {})
        self._factor = factor
        self._factor_file = None  # (HDF5 file holding /gp, its identity at load), read on first use of ``factor``
        self.sparse_jitter = sparse_jitter
        self._predictor = None

    @property
    def factor(self):
        """The fit's (M, M) upper R (R^T R = K_MM + K_MN Lambda^-1 K_NM) or None; read from the file's
        /gp only when first asked for (only variances need it)."""
        if self._factor is None and self._factor_file is not None:
            self._factor = _read_factor(*self._factor_file)
            self._factor_file = None
        return self._factor

    @factor.setter
    def factor(self, value):
        self._factor, self._factor_file = value, None

    @property
    def alpha(self):
        return np.concatenate([m.alpha for m in self.models])

    def baseline_energy(self, numbers):
        """sum_a e0(Z_a), eV. Unknown species are an error naming them."""
        unknown = sorted(set(int(z) for z in numbers) - set(self.e0))
        if unknown:
            raise InputError(
                f"species Z={unknown} unknown to this potential (it knows Z={sorted(self.e0)})"
            )
        return float(sum(self.e0[int(z)] for z in numbers))

    def predict_local_property(self, atoms):
        """A local-property potential's per-atom property (n,): p_a = p0(Z_a) + sum over the
        descriptors centred on atom a of sum_m alpha_m w k w_m (its e0 holds p0)."""
        if self.local_property is None:
            raise PargapError("this potential was fitted to energies, not to a local property")
        self.baseline_energy(atoms.numbers)  # raises for unknown species
        local = self._contracted(atoms, gradients=False).energies
        return local + np.array([self.e0[int(z)] for z in atoms.numbers])

    def _contracted(self, atoms, gradients):
        """The models' sum for ``atoms`` with alpha contracted once per set of models (Predictor)."""
        if self._predictor is None or not self._predictor.is_for(self.models):
            self._predictor = Predictor(self.models)
        return self._predictor(atoms, gradients=gradients)

    def predict(self, atoms, gradients=True):
        """Energy (eV), per-atom energies (n,), forces (n, 3) eV/A and virial (3, 3) eV."""
        self.baseline_energy(atoms.numbers)  # raises for unknown species, before any work
        if not self.models:
            raise PargapError("this potential has charge models only (pargap.fitting.charges): no energy to predict")
        if self.local_property is not None:
            raise PargapError(f"this potential predicts the local property '{self.local_property}' per atom "
                              "(predict_local_property), not energies")
        p = self._contracted(atoms, gradients)
        e0_atoms = np.array([self.e0[int(z)] for z in atoms.numbers])
        out = {"energy": p.energy + float(e0_atoms.sum()), "energies": p.energies + e0_atoms}
        if gradients:
            out["forces"] = p.forces
            out["virial"] = 0.5 * (p.virial + p.virial.T)
        if self.core is not None:
            for key, value in self.core.calculate(atoms, gradients).items():
                out[key] = out[key] + value
        return out

    # ---- files -------------------------------------------------------------------------------
    def save(self, path):
        """Write the potential to ``path`` atomically (temporary file in the same folder, then rename):
        QUIP's GAP XML if the name ends in .xml (:mod:`pargap.potential.quip_xml`; returns its label),
        else HDF5."""
        import h5py

        path = os.fspath(path)
        if is_quip_xml(path):
            from pargap.potential import quip_xml

            return quip_xml.save(self, path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pargap-", suffix=".h5.tmp", dir=folder)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["pargap_version"] = __version__
                if self.local_property is not None:
                    f.attrs["local_property"] = self.local_property
                zs = sorted(self.e0)
                g = f.create_group("e0")
                g.create_dataset("Z", data=np.array(zs, dtype=np.int64))
                g.create_dataset("e0", data=np.array([self.e0[z] for z in zs]))
                _write_models(f.create_group("models"), self.models)
                if self.charge_models:
                    _write_models(f.create_group("charge_models"), self.charge_models)
                if self.factor is not None:
                    gp = f.create_group("gp")
                    gp.attrs["M"] = len(self.factor)
                    gp.attrs["sparse_jitter"] = float(self.sparse_jitter or 0.0)
                    gp.create_dataset("R_upper", data=np.asarray(self.factor)[np.triu_indices(len(self.factor))])
                f.create_group("settings").attrs["toml"] = self.settings
                if self.core is not None:
                    cg = f.create_group("core")
                    cg.attrs["kind"], cg.attrs["ip_args"] = self.core.kind, self.core.ip_args
                    cg.attrs["source"] = self.core.source or ""
                    cg.create_dataset("text", data=self.core.text)  # a dataset: no 64 kB attribute limit
                prov = f.create_group("provenance")
                for key, val in self.provenance.items():
                    prov.attrs[key] = val if isinstance(val, (int, float, str)) else json.dumps(val)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a potential is for sharing
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path):
        """A potential from its HDF5 file, or from QUIP's GAP XML (name ending in .xml). The GP factor
        (/gp) is read later, when first used, and only if the file is still the one loaded."""
        import h5py

        path = os.fspath(path)
        if not os.path.exists(path):
            raise InputError("no such potential file", file=path)
        if is_quip_xml(path):
            from pargap.potential import quip_xml

            return cls(**quip_xml.read(path))
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"not an HDF5 file ({exc})", file=path) from None
        with f:
            if f.attrs.get("format") != FORMAT:
                raise InputError("not a pargap potential (attribute 'format' missing)", file=path)
            e0 = dict(zip(f["e0/Z"][()].tolist(), f["e0/e0"][()].tolist()))
            models = _read_models(f["models"])
            charge_models = _read_models(f["charge_models"]) if "charge_models" in f else []
            settings = f["settings"].attrs.get("toml", "")
            local_property = _plain(f.attrs["local_property"]) if "local_property" in f.attrs else None
            provenance = {k: _plain(v) for k, v in f["provenance"].attrs.items()}
            core = None
            if "core" in f:
                from pargap.baselines.core_potential import CorePotential

                a = {k: _plain(v) for k, v in f["core"].attrs.items()}
                text = f["core/text"].asstr()[()]
                core = CorePotential.from_text(a["kind"], text, a.get("ip_args", ""), a.get("source") or None)
            has_factor = "gp" in f
            identity = _identity(f)
            jitter = float(f["gp"].attrs["sparse_jitter"]) if has_factor else None
        potential = cls(models, e0, settings, provenance, core=core, charge_models=charge_models,
                        sparse_jitter=jitter, local_property=local_property)
        if has_factor:
            potential._factor_file = (os.path.abspath(path), identity)
        return potential


def is_quip_xml(path):
    """Whether a potential file name means QUIP's GAP XML (.xml) rather than pargap's HDF5."""
    return os.fspath(path).lower().endswith(".xml")


def _identity(f):
    """(device, inode, size, mtime_ns) of an open h5py file: a rewrite of its path changes it, whether
    by rename (a new inode, as ``save`` does) or in place (a new mtime)."""
    st = os.fstat(f.id.get_vfd_handle())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read_factor(path, identity):
    """The (M, M) upper R stored as /gp/R_upper in a potential file, which must still have the
    ``identity`` it had when its models were loaded (else the factor could be another fit's)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if _identity(f) != identity:
                raise InputError("changed since it was loaded (a new fit written to the same path?): its GP "
                                 "factor /gp may not belong to the loaded models; load the potential again",
                                 file=path)
            M = int(f["gp"].attrs["M"])
            factor = np.zeros((M, M))
            factor[np.triu_indices(M)] = f["gp/R_upper"][()]
    except (OSError, KeyError) as exc:
        raise InputError(f"cannot read the GP factor /gp ({exc}); was the file replaced?", file=path) from None
    return factor


def _write_models(group, models):
    """Models as subgroups 0, 1, ... of an HDF5 group, in the layout of /models/<k>."""
    for k, m in enumerate(models):
        mg = group.create_group(str(k))
        mg.attrs["descriptor"] = m.descriptor.name
        mg.attrs["kernel"] = m.kernel.name
        mg.attrs["gap_index"] = m.gap_index
        for key, val in m.descriptor.params().items():
            mg.attrs[f"descriptor.{key}"] = val
        for key, val in m.kernel.params().items():
            mg.attrs[f"kernel.{key}"] = val
        mg.create_dataset("alpha", data=np.asarray(m.alpha, dtype=float))
        mg.create_dataset("sparse_x", data=np.asarray(m.sparse_x, dtype=float))
        mg.create_dataset("sparse_weight", data=np.asarray(m.sparse_weight, dtype=float))


def _read_models(group):
    """The models written by :func:`_write_models`, in order."""
    models = []
    for k in sorted(group, key=int):
        mg = group[k]
        dparams = {a.split(".", 1)[1]: _plain(v) for a, v in mg.attrs.items() if a.startswith("descriptor.")}
        kparams = {a.split(".", 1)[1]: _plain(v) for a, v in mg.attrs.items() if a.startswith("kernel.")}
        descriptor = make_descriptor(mg.attrs["descriptor"], **dparams)
        kernel = make_kernel(mg.attrs["kernel"], dimension=descriptor.dimension, **kparams)
        models.append(Model(descriptor, kernel, mg["sparse_x"][()], mg["sparse_weight"][()],
                            mg["alpha"][()], int(mg.attrs["gap_index"])))
    return models


def _plain(value):
    """h5py attribute -> plain Python (numpy scalars to Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value
