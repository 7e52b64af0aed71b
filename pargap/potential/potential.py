"""A fitted GAP: models, coefficients and e0; prediction and the HDF5 file format.

    E = sum_a e0(Z_a) + E_core + sum_models sum_i sum_m alpha_m w(x_i) k(x_i, s_m) w_m

(E_core: the optional baseline potential, :mod:`pargap.baselines.core_potential`).

HDF5 layout (one file per potential, readable with plain h5py):

    /                     attrs: format="pargap-potential", format_version, pargap_version
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
"""

import json
import os
import tempfile

import numpy as np

from pargap.descriptors import make_descriptor
from pargap.errors import InputError, PargapError
from pargap.gp.kernels import make_kernel
from pargap.gp.model import Model
from pargap.gp.observations import model_rows
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
                 factor=None, sparse_jitter=None):
        self.core = core
        self.models = list(models)
        self.charge_models = list(charge_models)
        self.e0 = {int(z): float(v) for z, v in e0.items()}
        self.settings = settings
        self.provenance = dict(provenance or {})
        self.factor = factor
        self.sparse_jitter = sparse_jitter

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

    def predict(self, atoms, gradients=True):
        """Energy (eV), per-atom energies (n,), forces (n, 3) eV/A and virial (3, 3) eV."""
        self.baseline_energy(atoms.numbers)  # raises for unknown species, before any work
        if not self.models:
            raise PargapError("this potential has charge models only (pargap.fitting.charges): no energy to predict")
        rows = model_rows(atoms, self.models, gradients=gradients)
        alpha = self.alpha
        e0_atoms = np.array([self.e0[int(z)] for z in atoms.numbers])
        out = {
            "energy": float(rows.energy @ alpha) + float(e0_atoms.sum()),
            "energies": rows.local @ alpha + e0_atoms,
        }
        if gradients:
            out["forces"] = rows.forces @ alpha
            virial = rows.virial @ alpha
            out["virial"] = 0.5 * (virial + virial.T)
        if self.core is not None:
            for key, value in self.core.calculate(atoms, gradients).items():
                out[key] = out[key] + value
        return out

    # ---- HDF5 ---------------------------------------------------------------------------------
    def save(self, path):
        """Write the potential to ``path`` atomically (temporary file in the same folder, then rename)."""
        import h5py

        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pargap-", suffix=".h5.tmp", dir=folder)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["format"] = FORMAT
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["pargap_version"] = __version__
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
        import h5py

        path = os.fspath(path)
        if not os.path.exists(path):
            raise InputError("no such potential file", file=path)
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
            provenance = {k: _plain(v) for k, v in f["provenance"].attrs.items()}
            core = None
            if "core" in f:
                from pargap.baselines.core_potential import CorePotential

                a = {k: _plain(v) for k, v in f["core"].attrs.items()}
                text = f["core/text"].asstr()[()]
                core = CorePotential.from_text(a["kind"], text, a.get("ip_args", ""), a.get("source") or None)
            factor, jitter = None, None
            if "gp" in f:
                M = int(f["gp"].attrs["M"])
                factor = np.zeros((M, M))
                factor[np.triu_indices(M)] = f["gp/R_upper"][()]
                jitter = float(f["gp"].attrs["sparse_jitter"])
        return cls(models, e0, settings, provenance, core=core, charge_models=charge_models,
                   factor=factor, sparse_jitter=jitter)


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
