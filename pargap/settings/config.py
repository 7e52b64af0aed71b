"""Fit settings: one strict, typed configuration, from TOML or from a gap_fit command line.

Keys carry gap_fit's names and meanings, so a QUIP user's command line and the TOML file say the
same thing. TOML form::

    at_file = "train.xyz"
    gp_file = "potential.h5"
    default_sigma = [0.01, 1.0, 0.5, 0.0]     # energy (eV), force (eV/A), virial (eV), hessian
    [[gap]]
    descriptor = "distance_2b"
    cutoff = 5.0
    delta = 1.0
    theta_uniform = 1.0
    n_sparse = 20
    sparse_method = "uniform"

gap_fit form: ``at_file=train.xyz gap={distance_2b cutoff=5.0 delta=1.0 ... : ...} default_sigma={...}``.
Unknown keys are errors that name the key and suggest the closest valid one.
"""

import dataclasses
import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, fields

from pargap.errors import ConfigError

SPARSE_METHODS = ("uniform", "random", "none", "index_file", "file", "cur_points", "farthest_point")
KERNEL_NAMES = ("ard_se", "dot_product")
SOLVERS = ("auto", "tsqr", "scalapack", "serial")  # auto: tsqr when its (M+1)^2 triangles fit in memory
E0_METHODS = ("isolated", "average", "fit")

# The descriptor settings each descriptor takes (besides the kernel and sparsification ones).
DESCRIPTOR_KEYS = {
    "distance_2b": ("cutoff", "cutoff_transition_width", "Z1", "Z2"),
    "angle_3b": ("cutoff", "cutoff_transition_width", "Z", "Z1", "Z2"),
    "soap": ("cutoff", "cutoff_transition_width", "l_max", "n_max", "atom_sigma", "central_weight",
             "n_species", "species_Z", "Z", "normalise", "covariance_sigma0", "basis_error_exponent",
             "central_reference_all_species"),
}
DESCRIPTOR_NAMES = tuple(DESCRIPTOR_KEYS)
DESCRIPTOR_REQUIRED = {"soap": ("l_max", "n_max", "atom_sigma")}


@dataclass(frozen=True)
class GapSettings:
    """One ``gap={...}`` entry: a descriptor, its kernel and its sparse points.

    Descriptor settings a descriptor does not take are errors; unset ones take the descriptor's
    (gap_fit's) defaults."""

    descriptor: str
    cutoff: float
    delta: float
    covariance_type: str = "ard_se"
    cutoff_transition_width: float = 0.5
    Z: int = 0
    Z1: int = 0
    Z2: int = 0
    l_max: int | None = None
    n_max: int | None = None
    atom_sigma: float | None = None
    central_weight: float | None = None
    n_species: int | None = None
    species_Z: tuple | None = None
    normalise: bool | None = None
    covariance_sigma0: float | None = None
    basis_error_exponent: float | None = None
    central_reference_all_species: bool | None = None
    theta_uniform: float | None = None
    theta_fac: tuple | None = None
    theta_file: str | None = None
    zeta: float | None = None
    f0: float = 0.0
    n_sparse: int | None = None
    config_type_n_sparse: dict | None = None
    sparse_method: str = "random"
    sparse_file: str | None = None
    print_sparse_index: str | None = None
    add_species: bool = True
    unique_hash_tolerance: float = 1e-10
    unique_descriptor_tolerance: float = 1e-10

    def __post_init__(self):
        where = f"gap entry '{self.descriptor}'"
        if self.descriptor not in DESCRIPTOR_NAMES:
            raise ConfigError(
                f"unknown descriptor '{self.descriptor}'; supported: {', '.join(DESCRIPTOR_NAMES)}"
                + _suggest(self.descriptor, DESCRIPTOR_NAMES)
            )
        defaults = {f.name: f.default for f in fields(self)}
        for key in {k for keys in DESCRIPTOR_KEYS.values() for k in keys}:
            if key not in DESCRIPTOR_KEYS[self.descriptor] and getattr(self, key) != defaults[key]:
                raise ConfigError(f"{where}: '{key}' is not a setting of {self.descriptor}")
        for key in DESCRIPTOR_REQUIRED.get(self.descriptor, ()):
            if getattr(self, key) is None:
                raise ConfigError(f"{where}: {key} is required")
        if self.covariance_type not in KERNEL_NAMES:
            raise ConfigError(
                f"{where}: covariance_type '{self.covariance_type}' unknown; supported: {', '.join(KERNEL_NAMES)}"
                + _suggest(self.covariance_type, KERNEL_NAMES)
            )
        thetas = [k for k in ("theta_uniform", "theta_fac", "theta_file") if getattr(self, k) is not None]
        if self.covariance_type == "ard_se" and len(thetas) != 1:
            raise ConfigError(f"{where}: the ard_se kernel needs exactly one of theta_uniform, theta_fac or "
                              f"theta_file, got {', '.join(thetas) or 'none'}")
        if self.theta_fac is not None:
            fac = tuple(_float_list(self.theta_fac if isinstance(self.theta_fac, (list, tuple)) else [self.theta_fac],
                                    f"{where}.theta_fac"))
            if not fac or not all(f > 0 and math.isfinite(f) for f in fac):
                raise ConfigError(f"{where}: theta_fac must be positive numbers, got {self.theta_fac}")
            object.__setattr__(self, "theta_fac", fac)
        if self.config_type_n_sparse is not None:
            object.__setattr__(self, "config_type_n_sparse", _count_table(self.config_type_n_sparse, where))
            if self.n_sparse is not None:
                raise ConfigError(f"{where}: give n_sparse or config_type_n_sparse, not both (as gap_fit)")
        for name in ("unique_hash_tolerance", "unique_descriptor_tolerance"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if self.covariance_type == "dot_product" and self.zeta is None:
            raise ConfigError(f"{where}: zeta is required for the dot_product kernel")
        if self.sparse_method not in SPARSE_METHODS:
            raise ConfigError(
                f"{where}: sparse_method '{self.sparse_method}' unknown; supported: "
                f"{', '.join(SPARSE_METHODS)}" + _suggest(self.sparse_method, SPARSE_METHODS)
            )
        if self.sparse_method in ("index_file", "file") and not self.sparse_file:
            raise ConfigError(f"{where}: sparse_method={self.sparse_method} needs sparse_file")
        if self.n_sparse is not None and self.n_sparse < 1:
            raise ConfigError(f"{where}: n_sparse must be at least 1, got {self.n_sparse}")
        if self.sparse_method not in ("index_file", "file", "none") and not (self.n_sparse or
                                                                              self.config_type_n_sparse):
            raise ConfigError(f"{where}: sparse_method={self.sparse_method} needs n_sparse > 0 "
                              "(or config_type_n_sparse)")
        for name in ("cutoff", "delta", "theta_uniform", "zeta", "atom_sigma"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{where}: {name} must be a positive number, got {value}")

    def descriptor_params(self):
        """The descriptor settings that are set, as keyword arguments of the descriptor class."""
        out = {}
        for key in DESCRIPTOR_KEYS[self.descriptor]:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def kernel_params(self, dimension):
        """Keyword arguments of the kernel (pargap.gp.kernels.make_kernel) for a descriptor of
        ``dimension`` components. With theta_fac the length scales depend on the data: they are
        left out here (see pargap.fitting.models.theta_from_range)."""
        if self.covariance_type == "dot_product":
            return {"delta": self.delta, "zeta": self.zeta}
        if self.theta_file is not None:
            return {"delta": self.delta, "theta": read_theta_file(self.theta_file, dimension), "f0": self.f0}
        if self.theta_fac is not None:
            return {"delta": self.delta, "theta": self.theta_fac_vector(dimension), "f0": self.f0}
        return {"delta": self.delta, "theta_uniform": self.theta_uniform, "f0": self.f0}

    def theta_fac_vector(self, dimension):
        """theta_fac as (dimension,): one value for every dimension, or one per dimension."""
        fac = self.theta_fac
        if len(fac) not in (1, dimension):
            raise ConfigError(f"gap entry '{self.descriptor}': theta_fac has {len(fac)} values; give one, or one "
                              f"per descriptor dimension ({dimension})")
        return tuple(fac) * dimension if len(fac) == 1 else tuple(fac)


def read_theta_file(path, dimension):
    """gap_fit's theta_file: its first line holds ``dimension`` length scales (separated by
    spaces, ':' or ';')."""
    try:
        with open(path) as fh:
            first = fh.readline()
    except OSError as exc:
        raise ConfigError(f"theta_file {path}: cannot read it ({exc.strerror})") from None
    words = re.split(r"[\s:;{}]+", first.strip())
    try:
        theta = [float(w) for w in words if w]
    except ValueError:
        raise ConfigError(f"theta_file {path}: its first line is not a list of numbers: {first.strip()!r}") from None
    if len(theta) != dimension or not all(t > 0 and math.isfinite(t) for t in theta):
        raise ConfigError(f"theta_file {path}: expected {dimension} positive length scale(s) on the first line, "
                          f"got {first.strip()!r}")
    return theta


def _count_table(value, where):
    """config_type_n_sparse as {config type: n}, from a dict or gap_fit's ``{type:n:type:n}``."""
    if isinstance(value, str):
        items = [w for w in re.split(r"[\s:;]+", _unbrace(value)) if w]
        if len(items) % 2:
            raise ConfigError(f"{where}: config_type_n_sparse expects {{type:n:type:n...}}, got {value!r}")
        value = dict(zip(items[::2], items[1::2]))
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: config_type_n_sparse must be a table {{config type = n}}")
    out = {}
    for k, n in value.items():
        n = _parse_scalar(n) if isinstance(n, str) else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"{where}: config_type_n_sparse.{k} must be a whole number >= 0, got {n!r}")
        out[str(k)] = n
    return out


@dataclass(frozen=True)
class FitSettings:
    """Everything a fit needs. Units: eV, Angstrom."""

    at_file: str
    gap: tuple[GapSettings, ...]
    default_sigma: tuple[float, float, float, float]
    gp_file: str = "potential.h5"
    config_type_sigma: dict = field(default_factory=dict)
    sigma_per_atom: bool = True
    e0: float | dict | None = None
    e0_method: str = "isolated"
    e0_offset: float = 0.0
    energy_parameter_name: str = "energy"
    force_parameter_name: str = "forces"
    virial_parameter_name: str = "virial"
    stress_parameter_name: str = "stress"
    config_type_parameter_name: str = "config_type"
    sigma_parameter_name: str = "sigma"
    sparse_jitter: float = 1e-10
    hessian_delta: float = 0.01
    rnd_seed: int = -1
    solver: str = "auto"
    store_covariance: bool | None = None  # keep the GP's R factor in the file; None: when M <= 20000
    row_block_mb: float | None = None  # rows built and folded at a time, per rank; None: from the memory
    do_copy_at_file: bool = True
    sparse_separate_file: bool = True
    core_param_file: str | None = None  # baseline potential (pargap.baselines.core_potential), gap_fit's names
    core_ip_args: str | None = None
    # charge model (see the "charge model" block below): a second GP, for atomic charges
    charge_gap: tuple[GapSettings, ...] = ()
    esp_sigma: float = 0.01
    total_charge_sigma: float = 1e-4
    esp_parameter_name: str = "esp_values"
    esp_points_parameter_name: str = "esp_points"
    total_charge_parameter_name: str = "total_charge"
    # gap_fit's further key names; parameter_name_prefix is put before all of them (and the ones
    # above from energy to sigma) and is empty once the settings are made
    parameter_name_prefix: str = ""
    hessian_parameter_name: str = "hessian"
    force_mask_parameter_name: str = "force_mask"
    # local-property fits (pargap.data.local_property): per-atom targets of the gap models
    local_property_parameter_name: str = "local_property"
    local_property_mask_parameter_name: str = "local_property_mask"
    local_property0: float | dict | None = None
    default_local_property_sigma: float = 0.001
    # what to do besides the fit
    sparse_use_actual_gpcov: bool = False
    sparsify_only_no_fit: bool = False
    export_covariance: bool = False
    linear_system_dump_file: str | None = None
    template_file: str | None = None
    dryrun: bool = False
    verbosity: str = "NORMAL"

    def __post_init__(self):
        if not self.gap and not self.charge_gap:
            raise ConfigError("no model given: the 'gap' list (and the 'charge_gap' list) is empty")
        _check_charge_settings(self)
        if len(self.default_sigma) != 4:
            raise ConfigError(
                f"default_sigma needs 4 values (energy, force, virial, hessian), got {len(self.default_sigma)}"
            )
        for ct, sig in self.config_type_sigma.items():
            if len(sig) != 4:
                raise ConfigError(f"config_type_sigma '{ct}' needs 4 values, got {len(sig)}")
        if self.e0_method not in E0_METHODS:
            raise ConfigError(f"e0_method must be one of {', '.join(E0_METHODS)}, got '{self.e0_method}'")
        if self.solver not in SOLVERS:
            raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got '{self.solver}'")
        if self.solver == "scalapack" and self.store_covariance:
            raise ConfigError("store_covariance = true needs the R factor on one rank: use solver = \"tsqr\" "
                              "or \"auto\" (the ScaLAPACK solver keeps R distributed and stores no /gp)")
        if not self.hessian_delta > 0:
            raise ConfigError(f"hessian_delta must be positive, got {self.hessian_delta}")
        if self.row_block_mb is not None and not (self.row_block_mb > 0 and math.isfinite(self.row_block_mb)):
            raise ConfigError(f"row_block_mb must be a positive number of MB, got {self.row_block_mb}")
        if not self.sparse_jitter >= 0:
            raise ConfigError(f"sparse_jitter must be >= 0, got {self.sparse_jitter}")
        _check_core(self)
        _apply_prefix(self)
        if not (self.default_local_property_sigma > 0 and math.isfinite(self.default_local_property_sigma)):
            raise ConfigError(f"default_local_property_sigma must be a positive number, got "
                              f"{self.default_local_property_sigma}")
        if self.verbosity.upper() not in VERBOSITY:
            raise ConfigError(f"verbosity must be one of {', '.join(VERBOSITY)}, got '{self.verbosity}'"
                              + _suggest(self.verbosity.upper(), VERBOSITY))
        object.__setattr__(self, "verbosity", self.verbosity.upper())
        if self.export_covariance:
            if self.store_covariance is False:
                raise ConfigError("export_covariance = true keeps the posterior factor: it contradicts "
                                  "store_covariance = false")
            object.__setattr__(self, "store_covariance", True)

    @property
    def cutoff(self):
        return max(g.cutoff for g in self.gap + self.charge_gap)

    def to_dict(self):
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("gap", "charge_gap"):
                value = [{k: v for k, v in dataclasses.asdict(g).items() if v is not None} for g in value]
            elif isinstance(value, tuple):
                value = list(value)
            if value is None:
                continue
            out[f.name] = value
        return out

    def to_toml(self):
        return to_toml(self.to_dict())


VERBOSITY = ("NORMAL", "VERBOSE", "NERD", "ANALYSIS")
"""gap_fit's verbosity levels; pargap logs its progress at NORMAL and more detail at the others
(pargap.progress.Log.verbose)."""

PREFIXED_NAMES = ("energy_parameter_name", "local_property_parameter_name", "force_parameter_name",
                  "virial_parameter_name", "hessian_parameter_name", "stress_parameter_name",
                  "config_type_parameter_name", "sigma_parameter_name", "force_mask_parameter_name",
                  "local_property_mask_parameter_name")
"""The key names gap_fit puts parameter_name_prefix before (gap_fit_parse_command_line)."""


def _apply_prefix(settings):
    """Put parameter_name_prefix before every key name of PREFIXED_NAMES, then clear it, so that
    the names are the ones looked up and the settings print (and reload) as they are."""
    prefix = settings.parameter_name_prefix
    if prefix:
        for name in PREFIXED_NAMES:
            object.__setattr__(settings, name, prefix + getattr(settings, name))
        object.__setattr__(settings, "parameter_name_prefix", "")


def local_property_offsets(settings):
    """{element symbol or None: p0} of local_property0: one value for all species (key None), or
    one per element; empty when it is not set."""
    p0 = settings.local_property0
    if p0 is None:
        return {}
    return dict(p0) if isinstance(p0, dict) else {None: float(p0)}


# ---- charge model (issue 5): settings of the ESP-fitted charge GP ------------------------------
#
# ``charge_gap`` entries take exactly the keys of ``gap`` entries (TOML ``[[charge_gap]]``, gap_fit
# style ``charge_gap={soap ... : ...}``); their ``delta`` is a charge scale in e. ``esp_sigma`` is
# the noise of ESP values (V), ``total_charge_sigma`` that of the total-charge row (e; small: a
# soft constraint). The data keys (DESIGN.md section 6) are configurable like energy_parameter_name;
# per-structure overrides are the info keys ``esp_<sigma_parameter_name>`` and
# ``total_charge_<sigma_parameter_name>``. A fit may have charge models only (no ``gap``,
# ``default_sigma`` then optional and energies unused).

def _check_charge_settings(settings):
    for name in ("esp_sigma", "total_charge_sigma"):
        value = getattr(settings, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a positive number, got {value}")


def _gap_entries(entries, key):
    """GapSettings of each table in ``entries`` (one table or a list of them) of setting ``key``."""
    if isinstance(entries, dict):
        entries = [entries]
    models = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}[{k}] must be a table of settings")
        models.append(_build(GapSettings, entry, f"{key}[{k}]"))
    return tuple(models)


def _charge_models_from_dict(data):
    """Build the ``charge_gap`` entries in ``data`` (a settings dict) into GapSettings; a dict
    with charge models only gets an empty ``gap`` and, if absent, zero ``default_sigma``."""
    entries = data.get("charge_gap")
    if entries is None:
        return data
    data["charge_gap"] = _gap_entries(entries, "charge_gap")
    if not data.get("gap"):
        data["gap"] = ()
        data.setdefault("default_sigma", (0.0, 0.0, 0.0, 0.0))
    return data


# ---- construction from plain dicts (TOML, gap_fit) ------------------------------------------------

def _suggest(word, options):
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(value, annotation, key):
    """Coerce a TOML/CLI value to a field's type; errors name the key."""
    ann = str(annotation)
    try:
        if isinstance(value, str) and ("float" in ann or "int" in ann or "bool" in ann) and "str" not in ann:
            value = _parse_scalar(value)
        if ann in ("float", "<class 'float'>") or ann.startswith("float |"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            return float(value)
        if ann in ("int", "<class 'int'>") or ann.startswith("int |"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise TypeError
            return int(value)
        if ann in ("bool", "<class 'bool'>") or ann.startswith("bool |"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if ann in ("str", "<class 'str'>") or ann.startswith("str |"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{key}': {value!r} is not a valid {ann.replace('<class ', '').rstrip('>')}") from None
    return value


def _build(cls, data, context):
    known = {f.name: f for f in fields(cls)}
    lowered = {k.lower(): k for k in known}
    kwargs = {}
    for key, value in data.items():
        name = key if key in known else lowered.get(key.lower())
        if name is None:
            raise ConfigError(f"{context}: unknown setting '{key}'" + _suggest(key, known))
        if name == "species_Z":
            value = tuple(int(z) for z in (value if isinstance(value, (list, tuple)) else str(value).split()))
        elif name not in ("gap", "charge_gap", "e0", "local_property0", "default_sigma", "config_type_sigma",
                          "theta_fac", "config_type_n_sparse"):
            value = _convert(value, known[name].type, f"{context}.{key}" if context != "settings" else key)
        kwargs[name] = value
    missing = [
        n for n, f in known.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{context}: required setting(s) missing: {', '.join(missing)}")
    return cls(**kwargs)


def settings_from_dict(data):
    """FitSettings from a plain dict (as TOML gives)."""
    data = _charge_models_from_dict(dict(data))
    gap = data.get("gap")
    if gap is None:
        raise ConfigError("settings: required setting 'gap' (the list of models) is missing")
    data["gap"] = _gap_entries(gap, "gap")
    if "default_sigma" in data:
        data["default_sigma"] = tuple(_float_list(data["default_sigma"], "default_sigma"))
    if "config_type_sigma" in data:
        cts = data["config_type_sigma"]
        if not isinstance(cts, dict):
            raise ConfigError("config_type_sigma must be a table {config_type = [sE, sF, sV, sH]}")
        data["config_type_sigma"] = {str(k): tuple(_float_list(v, f"config_type_sigma.{k}")) for k, v in cts.items()}
    for key in ("e0", "local_property0"):
        if isinstance(data.get(key), str):
            data[key] = _parse_scalar(data[key])
        if isinstance(data.get(key), dict):
            data[key] = {str(k): float(v) for k, v in data[key].items()}
        elif data.get(key) is not None:
            try:
                data[key] = float(data[key])
            except (TypeError, ValueError):
                raise ConfigError(f"setting '{key}': expected a number or a table of numbers per element, "
                                  f"got {data[key]!r}") from None
    return _build(FitSettings, data, "settings")


def _float_list(value, key):
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"setting '{key}': expected a list of numbers, got {value!r}") from None


def read_toml(path, what="settings"):
    """The TOML file at ``path`` as a dict; a missing or invalid file is a ConfigError naming it."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {path}: invalid TOML: {exc}") from None


def load_toml(path, overrides=()):
    """Read a TOML settings file and apply ``key=value`` overrides (``--set``)."""
    data = read_toml(path)
    apply_overrides(data, overrides)
    return settings_from_dict(data)


def apply_overrides(data, overrides):
    """Set ``a.b.c=value`` in a nested dict; list entries by index (``gap.0.n_sparse=30``).

    The value is read as a TOML value when it parses as one, otherwise as a string."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ConfigError(f"--set {key}: no list entry '{part}'") from None
            else:
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            try:
                node[int(last)] = value
            except (ValueError, IndexError):
                raise ConfigError(f"--set {key}: no list entry '{last}'") from None
        else:
            node[last] = value


# ---- gap_fit command line ---------------------------------------------------------------------

GAPFIT_UNSUPPORTED = {
    "config_type_n_sparse": "it is an option of each model: write it inside gap={...}",
}
"""gap_fit options pargap refuses, and why. Every option of ``gap_fit --help`` is accepted."""

GAPFIT_IGNORED = {
    "mpi_blocksize_rows": "pargap partitions the rows over the ranks by cost itself",
    "mpi_blocksize_cols": "a ScaLAPACK block size of gap_fit's; pargap's solvers choose their own",
    "openmp_chunk_size": "pargap has no OpenMP loops (threads only inside BLAS/LAPACK)",
    "mpi_print_all": "progress is printed by rank 0, and every rank reports its own errors",
    "do_ip_timing": "it times QUIP's potential calls; pargap logs the time of every phase anyway",
}
"""gap_fit options accepted and ignored, each with one log line saying why."""

GAPFIT_NO_EFFECT = {"do_copy_atoms_file", "condition_number_norm"}
"""gap_fit options accepted and without effect on the coefficients (gap_fit's XML copy of the data;
the norm of the condition estimate gap_fit prints: pargap always logs its own estimate)."""

GAPFIT_ALIASES = {  # gap_fit's long option names (its param_register keys) -> the short ones pargap uses
    "baseline_param_filename": "core_param_file", "baseline_ip_args": "core_ip_args",
    "atoms_filename": "at_file", "gap_file": "gp_file", "default_kernel_regularisation": "default_sigma",
    "config_type_kernel_regularisation": "config_type_sigma", "kernel_regularisation_is_per_atom": "sigma_per_atom",
    "kernel_regularisation_parameter_name": "sigma_parameter_name", "hessian_displacement": "hessian_delta",
    "default_kernel_regularisation_local_property": "default_local_property_sigma",
}

# ---- the baseline ("core") potential: gap_fit's core_param_file / core_ip_args ----------------
GAPFIT_CORE_DEFAULT_FILE = "quip_params.xml"  # gap_fit's default core_param_file


def _check_core(settings):
    """core_ip_args switches the baseline on (as in gap_fit; its file defaults to quip_params.xml);
    a core_param_file alone, which gap_fit would silently ignore, is an error."""
    if settings.core_ip_args is None:
        if settings.core_param_file is not None:
            raise ConfigError("core_param_file is set but core_ip_args is not: give core_ip_args "
                              "('IP Glue' or 'pair_table') to use the baseline potential")
        return
    parse_ip_args(settings.core_ip_args)
    if settings.core_param_file is None:
        object.__setattr__(settings, "core_param_file", GAPFIT_CORE_DEFAULT_FILE)


def parse_ip_args(ip_args):
    """gap_fit's core_ip_args -> (kind, {option: value}): ``IP Glue [label=...]`` is QUIP's glue
    XML; ``pair_table`` is pargap's tabulated pair potential."""
    words = str(ip_args).strip().strip("{}").split()
    if len(words) >= 2 and words[0].upper() == "IP" and words[1].lower() == "glue":
        options = dict(w.split("=", 1) for w in words[2:] if "=" in w)
        return "glue", options
    if len(words) == 1 and words[0].lower() == "pair_table":
        return "pair_table", {}
    raise ConfigError(f"core_ip_args '{ip_args}' is not supported: pargap knows 'IP Glue' (QUIP's glue XML, "
                      "e.g. GAP-18's glue.xml) and 'pair_table' (a tabulated pair potential)")


GAP_STRING_UNSUPPORTED = {
    "exponents", "n_exponents", "tail_range", "tail_exponent", "resid_name", "only_intra",
    "only_inter",
}
GAP_STRING_ALIASES = {"soap_exponent": "zeta", "z_center": "Z", "energy_scale": "delta",
                      "lengthscale_uniform": "theta_uniform", "lengthscale_factor": "theta_fac",
                      "lengthscale_file": "theta_file"}


def _split_top(text, sep=None):
    """Split on whitespace (or ``sep``) outside braces."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced '}}' in '{text}'")
        is_sep = ch.isspace() if sep is None else ch == sep
        if is_sep and depth == 0:
            if cur:
                out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ConfigError(f"unbalanced '{{' in '{text}'")
    if cur:
        out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _unbrace(value):
    """Strip enclosing braces, repeatedly (QUIP's own tests write ``gap={{...}}``), but only a pair
    that encloses the whole text (not ``{a}:{b}``)."""
    value = value.strip()
    while value.startswith("{") and value.endswith("}") and _closing_brace(value) == len(value) - 1:
        value = value[1:-1].strip()
    return value


def _closing_brace(text):
    """Index of the brace closing the one at text[0]."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return i
    return -1


def _parse_scalar(text):
    t = text.strip()
    if t.lower() in ("t", "true"):
        return True
    if t.lower() in ("f", "false"):
        return False
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def _key_values(text, context):
    pairs = {}
    for tok in _split_top(text):
        if "=" not in tok:
            raise ConfigError(f"{context}: expected key=value, got '{tok}'")
        key, value = tok.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def parse_gap_string(text, notes=None):
    """``distance_2b cutoff=5 ... : distance_2b ...`` -> list of GapSettings dicts. ``notes``
    (a list) receives a line where gap_fit reads an entry differently from how it looks."""
    notes = [] if notes is None else notes
    entries = []
    for k, part in enumerate(_split_top(_unbrace(text), sep=":")):
        words = _split_top(_unbrace(part))
        if not words:
            continue
        descriptor, rest = words[0], " ".join(words[1:])
        if "=" in descriptor:
            raise ConfigError(f"gap entry {k}: it must start with the descriptor name, got '{descriptor}'")
        entry = {"descriptor": descriptor}
        for key, value in _key_values(rest, f"gap entry {k} ({descriptor})").items():
            low = key.lower()
            if low in GAP_STRING_UNSUPPORTED:
                raise ConfigError(f"gap entry {k} ({descriptor}): option '{key}' is not supported by pargap yet")
            if low == "theta":
                raise ConfigError(f"gap entry {k} ({descriptor}): unknown option '{key}' (did you mean 'theta_uniform'?)")
            key = GAP_STRING_ALIASES.get(low, key)
            inner = _unbrace(value)
            if low in ("covariance_type", "sparse_method"):  # gap_fit reads these case-insensitively
                inner = {"gaussian": "ard_se"}.get(inner.lower(), inner.lower())
            if low == "species_z":
                entry[key] = [int(z) for z in inner.split()]
            elif key == "theta_fac":
                words = [w for w in re.split(r"[\s:;]+", inner.strip()) if w]
                if len(inner.split()) > 1 and value.strip().startswith("{") and not value.strip().startswith("{{"):
                    # gap_fit drops these braces with the entry's and reads theta_fac=<first number>
                    notes.append(f"gap entry {k} ({descriptor}): {key}={value} is read as {key}={words[0]}, as gap_fit "
                                 f"reads it; write {key}={{{':'.join(words)}}} for one factor per dimension")
                    words = words[:1]
                entry[key] = _float_list(words, f"gap entry {k}: theta_fac")
            elif key == "config_type_n_sparse":
                entry[key] = inner
            else:
                entry[key] = _parse_scalar(inner)
        entries.append(entry)
    return entries


def read_config_file(path):
    """gap_fit's config_file: the options, from a file whose newlines count as spaces."""
    try:
        with open(path) as fh:
            return fh.read().replace("\r", " ").replace("\n", " ")
    except OSError as exc:
        raise ConfigError(f"config_file {path}: cannot read it ({exc.strerror})") from None


def parse_gapfit_args(tokens, notes=None):
    """A gap_fit command line (``key=value`` tokens, braces allowed) -> settings dict.

    ``notes`` (a list), if given, receives one line per option accepted and ignored, saying why;
    with ``config_file`` the options are read from that file and, as in gap_fit, the rest of the
    command line is ignored."""
    notes = [] if notes is None else notes
    text = " ".join(tokens)
    given = _key_values(text, "gap_fit command line")
    config_file = next((v for k, v in given.items() if k.lower() == "config_file"), None)
    if config_file is not None:
        config_file = _unbrace(config_file)
        for key in given:
            if key.lower() != "config_file":
                notes.append(f"gap_fit option '{key}' ignored: config_file={config_file} is given, and gap_fit "
                             "then reads its options from that file only")
        text = read_config_file(config_file)
        given = _key_values(text, f"config_file {config_file}")
        if any(k.lower() == "config_file" for k in given):
            raise ConfigError(f"config_file {config_file}: it names a config_file itself")
    data = {}
    known = {f.name.lower(): f.name for f in fields(FitSettings)}
    for key, value in given.items():
        low = GAPFIT_ALIASES.get(key.lower(), key.lower())
        if low in GAPFIT_UNSUPPORTED:
            raise ConfigError(f"gap_fit option '{key}' is not supported by pargap: {GAPFIT_UNSUPPORTED[low]}")
        if low in GAPFIT_IGNORED:
            notes.append(f"gap_fit option '{key}' ignored: {GAPFIT_IGNORED[low]}")
            continue
        if low == "gap":
            data["gap"] = parse_gap_string(value, notes)
        elif low == "charge_gap":
            data["charge_gap"] = parse_gap_string(value, notes)
        elif low == "default_sigma":
            data["default_sigma"] = _float_list(_unbrace(value), key)
        elif low == "config_type_sigma":
            items = _unbrace(value).split(":")
            if len(items) % 5:
                raise ConfigError("config_type_sigma: expected {type:sE:sF:sV:sH:...} in groups of 5")
            data["config_type_sigma"] = {
                items[i]: _float_list(items[i + 1:i + 5], f"config_type_sigma.{items[i]}")
                for i in range(0, len(items), 5)
            }
        elif low in ("e0", "local_property0"):
            inner = _unbrace(value)
            try:
                if ":" in inner:
                    items = inner.split(":")
                    if len(items) % 2:
                        raise ValueError
                    data[low] = {items[i].strip(): float(items[i + 1]) for i in range(0, len(items), 2)}
                else:
                    data[low] = float(inner)
            except ValueError:
                raise ConfigError(f"{key}: expected a number or {{Sym:value:Sym:value...}}, got {value!r}") from None
        elif low in GAPFIT_NO_EFFECT:
            continue
        elif low in known:
            data[known[low]] = _parse_scalar(_unbrace(value))
        else:
            raise ConfigError(f"unknown gap_fit option '{key}'" + _suggest(low, list(known) + list(GAPFIT_IGNORED)))
    return data


# ---- TOML writer (the subset pargap needs) ------------------------------------------------------

def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v)} to TOML")


def _toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def to_toml(data):
    """Plain dict (scalars, lists, dicts, list of dicts under 'gap') -> TOML text."""
    lines, tables = [], []
    for key, value in data.items():
        if key in ("gap", "charge_gap"):
            continue
        if isinstance(value, dict) and value:
            tables.append((key, value))
        elif not isinstance(value, dict):
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables:
        lines += ["", f"[{key}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
    for table in ("gap", "charge_gap"):
        for entry in data.get(table, []):
            lines += ["", f"[[{table}]]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"
