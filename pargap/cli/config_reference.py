"""The settings reference (docs/config.md), generated from the dataclasses of pargap.settings.config.

    python -m pargap.cli.config_reference            # rewrite docs/config.md
    python -m pargap.cli.config_reference --check    # exit 1 if docs/config.md is out of date

Names, types, defaults, which descriptors take a key, allowed values and the gap_fit options
pargap refuses or ignores all come from pargap.settings.config (FitSettings, GapSettings,
DESCRIPTOR_KEYS, SPARSE_METHODS, KERNEL_NAMES, GAPFIT_UNSUPPORTED, ...) and from the descriptor
classes' own defaults; only the one-line descriptions live here, in DESCRIPTIONS. A new setting
without a description fails tests/test_docs.py, as does a docs/config.md that differs from
:func:`render`.
"""

import argparse
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

from pargap.settings import config

OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "config.md"

# One line per setting, keyed "FitSettings.<field>" or "GapSettings.<field>". Units in the text.
DESCRIPTIONS = {
    "FitSettings.at_file": "training structures: extended XYZ (indexed, each rank parses only its own frames) "
                           "or any format ASE reads",
    "FitSettings.gap": "the models, one `[[gap]]` table each (gap_fit: `gap={... : ...}`); summed and solved together",
    "FitSettings.default_sigma": "noise of the observations `[energy (eV), force (eV/A), virial (eV), "
                                 "hessian (eV/A^2)]`",
    "FitSettings.gp_file": "output potential, written atomically by rank 0: HDF5, or QUIP's GAP XML (+ sparseX files) "
                           "if the name ends in .xml (docs/lammps.md)",
    "FitSettings.config_type_sigma": "per config type noise, `{liquid = [sE, sF, sV, sH]}` "
                                     "(gap_fit: `{liquid:sE:sF:sV:sH:...}`)",
    "FitSettings.sigma_per_atom": "multiply the energy and virial sigma by sqrt(number of atoms)",
    "FitSettings.e0": "isolated-atom energy (eV): one number for all species, or `{Si = -158.54}` per element; "
                      "overrides e0_method",
    "FitSettings.e0_method": "where e0 comes from without `e0`: a one-atom structure with no neighbour per "
                             "species (`isolated`), the mean energy per atom for every species (`average`, "
                             "gap_fit's), or per species by least squares of the total energies on the "
                             "species counts (`fit`; for data of varied composition)",
    "FitSettings.e0_offset": "added to the e0 of every species (eV)",
    "FitSettings.energy_parameter_name": "key of the total energy (eV); keys are matched case-insensitively",
    "FitSettings.force_parameter_name": "per-atom key of the forces (eV/A); `force` is tried when `forces` is absent",
    "FitSettings.virial_parameter_name": "key of the virial (eV), 9 numbers",
    "FitSettings.stress_parameter_name": "key of the stress (eV/A^3, 9 numbers or Voigt), used when there is "
                                         "no virial: virial = -stress x volume",
    "FitSettings.config_type_parameter_name": "key of the config type (for config_type_sigma and error tables)",
    "FitSettings.sigma_parameter_name": "suffix of the per-structure overrides `energy_sigma`, `force_sigma`, "
                                        "`virial_sigma`, `hessian_sigma`, per-atom `force_atom_sigma`, "
                                        "`force_component_sigma`, and `virial_component_sigma`",
    "FitSettings.sparse_jitter": "added to the diagonal of K_MM (eV^2), as gap_fit",
    "FitSettings.charge_gap": "charge models, one `[[charge_gap]]` table each (same keys as `[[gap]]`; delta in e): "
                              "a second GP for atomic charges fitted to ESP values (pargap.fitting.charges)",
    "FitSettings.esp_sigma": "noise of the electrostatic-potential observations (V)",
    "FitSettings.total_charge_sigma": "noise of the total-charge observation of each structure (e)",
    "FitSettings.esp_parameter_name": "info key of the ESP values (K numbers, V)",
    "FitSettings.esp_points_parameter_name": "info key of the ESP points (3K numbers, A)",
    "FitSettings.total_charge_parameter_name": "info key of a structure's total charge (e)",
    "FitSettings.store_covariance": "store the fit's (M, M) R factor in the potential for the predictive variance "
                                    "(unset: only when M <= 20000; not with solver = scalapack, which keeps R distributed)",
    "FitSettings.core_ip_args": "core (baseline) potential: `IP Glue` (QUIP glue XML) or `pair_table` (pargap's "
                                "tabulated pair file); its energy, forces, virial and Hessian are subtracted from the "
                                "targets and added back on prediction",
    "FitSettings.core_param_file": "the core potential's parameter file (gap_fit's default `quip_params.xml`); "
                                   "needs core_ip_args",
    "FitSettings.hessian_delta": "displacement (A) of the central difference that turns force rows into "
                                 "Hessian-eigenvalue rows",
    "FitSettings.rnd_seed": "seed of the sparse point selection; -1: drawn on rank 0 and recorded in the potential",
    "FitSettings.solver": "least-squares solver: `tsqr` (distributed tall-skinny QR), `scalapack` (2-D "
                          "block-cyclic QR, K_MM distributed too), `serial` (rows gathered on rank 0: a reference) "
                          "or `auto` (tsqr when its (M+1)^2 triangles fit in half the memory per rank)",
    "FitSettings.row_block_mb": "MB of covariance rows each rank builds and folds into the factor at a time "
                                "(memory per rank: one block plus the factor, whatever the data's size); unset: 2048 rows, "
                                "at most 5% of the memory per rank, at least 4 MB and the largest structure's rows",
    "FitSettings.do_copy_at_file": "accepted for gap_fit command lines; no effect (no XML copy of the data)",
    "FitSettings.sparse_separate_file": "accepted for gap_fit command lines; no effect (one HDF5 file)",
    "FitSettings.parameter_name_prefix": "put before every key name (energy, local property, force, virial, stress, "
                                         "Hessian, config type, sigma, both masks), as gap_fit; empty once applied",
    "FitSettings.hessian_parameter_name": "Hessian keys: count `n_<name>`, eigenvalues `<name>1..k` (info, eV/A^2), "
                                          "eigenvectors `<name>1..k` (per atom)",
    "FitSettings.force_mask_parameter_name": "per-atom logical column: the forces of atoms marked true leave the fit",
    "FitSettings.local_property_parameter_name": "per-atom column of a local-property fit: the gap models are fitted "
                                                 "to per-atom values instead of energies",
    "FitSettings.local_property_mask_parameter_name": "per-atom logical column: only atoms marked true have a "
                                                      "local-property row (gap_fit's meaning)",
    "FitSettings.local_property0": "subtracted from the local property before the fit and added back on prediction: "
                                   "one number, or `{Si = 0.5}` per element; setting it sets e0 to zero (as gap_fit)",
    "FitSettings.default_local_property_sigma": "noise of the local-property rows (the property's unit; never "
                                                "scaled by the number of atoms); gap_fit's "
                                                "`default_kernel_regularisation_local_property` too",
    "FitSettings.sparse_use_actual_gpcov": "farthest_point measures distances with the model's kernel "
                                           "(gap_fit's kernel distance) instead of the Euclidean one",
    "FitSettings.sparsify_only_no_fit": "choose the sparse points, write them to `<gp_file>.sparseX.<k>` in "
                                        "sparse_method=file form (and the print_sparse_index files), and stop",
    "FitSettings.export_covariance": "keep the posterior factor in the potential (as store_covariance = true)",
    "FitSettings.linear_system_dump_file": "write the linear system (Lambda^-1/2 K_NM, Lambda^-1/2 y, K_MM) to "
                                           "this HDF5 file before the solve",
    "FitSettings.template_file": "gap_fit's template structure for descriptors that need one: read and checked; "
                                 "none of pargap's descriptors uses it",
    "FitSettings.dryrun": "no fit: print the memory plan, as --dry-run",
    "FitSettings.verbosity": "log detail: NORMAL, or VERBOSE (= NERD = ANALYSIS) for per-model details",
    "GapSettings.theta_fac": "ard_se length scales from the data: theta_d = theta_fac_d x (range of dimension d over "
                             "all descriptors); one value or one per dimension",
    "GapSettings.theta_file": "ard_se length scales from a file: one per descriptor dimension on its first line",
    "GapSettings.config_type_n_sparse": "sparse points per config type, `{bulk = 50, liquid = 20}` (gap_fit: "
                                        "`{bulk:50:liquid:20}`), chosen separately and joined; not with n_sparse",
    "GapSettings.unique_hash_tolerance": "duplicate descriptors: tolerance of their hashes sum_d |x_d|",
    "GapSettings.unique_descriptor_tolerance": "duplicate descriptors: tolerance of every component",
    "GapSettings.descriptor": "the descriptor: pair distance, angle triplet (r_ij + r_ik, (r_ij - r_ik)^2, r_jk) "
                              "or QUIP's SOAP power spectrum",
    "GapSettings.cutoff": "cutoff radius (A)",
    "GapSettings.delta": "energy scale of the kernel (eV)",
    "GapSettings.covariance_type": "kernel: `ard_se` (squared exponential) or `dot_product` (for soap)",
    "GapSettings.cutoff_transition_width": "width (A) of the cosine switch-off below the cutoff",
    "GapSettings.Z": "centre species (atomic number, 0: any)",
    "GapSettings.Z1": "first neighbour species (distance_2b: one end of the pair; 0: any)",
    "GapSettings.Z2": "second neighbour species (0: any)",
    "GapSettings.l_max": "angular basis size of SOAP (required for soap)",
    "GapSettings.n_max": "radial basis size of SOAP (required for soap)",
    "GapSettings.atom_sigma": "Gaussian smearing of the SOAP atom density (A; required for soap)",
    "GapSettings.central_weight": "weight of the central atom in the SOAP density",
    "GapSettings.n_species": "number of neighbour species of SOAP (set by add_species)",
    "GapSettings.species_Z": "neighbour species of SOAP, n_species atomic numbers (set by add_species)",
    "GapSettings.normalise": "normalise the SOAP vector to unit length",
    "GapSettings.covariance_sigma0": "constant added to the SOAP vector before normalising (gap_fit's)",
    "GapSettings.basis_error_exponent": "accuracy of SOAP's radial basis (gap_fit's)",
    "GapSettings.central_reference_all_species": "the central atom counts in every species channel "
                                                 "(default: true for one species)",
    "GapSettings.theta_uniform": "length scale of `ard_se`, in the descriptor's units (ard_se needs one of "
                                 "theta_uniform, theta_fac, theta_file)",
    "GapSettings.zeta": "exponent of `dot_product` (required for dot_product; gap_fit's `soap_exponent` too)",
    "GapSettings.f0": "constant offset of `ard_se` (eV)",
    "GapSettings.n_sparse": "number of sparse points (required except for sparse_method none, file, index_file); "
                            "capped at the number of distinct descriptors",
    "GapSettings.sparse_method": "how sparse points are chosen; every method picks the same points for any "
                                 "number of ranks",
    "GapSettings.sparse_file": "for `index_file`: 1-based descriptor indices, one per line; for `file`: per "
                               "point its cutoff weight then its components, one number per line",
    "GapSettings.print_sparse_index": "append the chosen 1-based descriptor indices to this file "
                                      "(re-usable as `index_file`)",
    "GapSettings.add_species": "with no species given, one model per species pair (distance_2b), per centre "
                               "species and neighbour pair (angle_3b), per centre species (soap), as gap_fit",
}

# Settings that are pargap's own (no gap_fit option of that name).
PARGAP_ONLY = {"FitSettings.solver", "FitSettings.store_covariance", "FitSettings.row_block_mb", "FitSettings.charge_gap", "FitSettings.esp_sigma",
               "FitSettings.total_charge_sigma", "FitSettings.esp_parameter_name",
               "FitSettings.esp_points_parameter_name", "FitSettings.total_charge_parameter_name"}

# Allowed values of string settings; the tuples of pargap.settings.config where it has them.
ALLOWED = {
    "GapSettings.descriptor": config.DESCRIPTOR_NAMES,
    "GapSettings.covariance_type": config.KERNEL_NAMES,
    "GapSettings.sparse_method": config.SPARSE_METHODS,
    "FitSettings.e0_method": config.E0_METHODS,
    "FitSettings.solver": config.SOLVERS,
    "FitSettings.verbosity": config.VERBOSITY,
}

HOW_TO_FIX = ("add a one-line description for {keys} to DESCRIPTIONS in pargap/cli/config_reference.py (and "
              "the key to PARGAP_ONLY if gap_fit has no such option, to ALLOWED if it takes a fixed set "
              "of values), then run `python -m pargap.cli.config_reference` to regenerate docs/config.md")


def setting_keys():
    """Every setting as "Class.field", in dataclass order."""
    return [f"{cls.__name__}.{f.name}" for cls in (config.FitSettings, config.GapSettings)
            for f in dataclasses.fields(cls)]


def missing_descriptions():
    return [k for k in setting_keys() if not DESCRIPTIONS.get(k, "").strip()]


def _type_name(annotation):
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("pargap.settings.config.", "").replace(" | ", " or ")


def _code(value):
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _descriptor_default(descriptor, name):
    """Default of keyword ``name`` of a descriptor class (None when it has none)."""
    from pargap.descriptors import DESCRIPTORS

    module, cls = DESCRIPTORS[descriptor].split(":")
    param = inspect.signature(getattr(importlib.import_module(module), cls)).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _default(cls, f):
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is not None:
        return _code(value)
    if cls is config.GapSettings:
        required = [d for d, keys in config.DESCRIPTOR_REQUIRED.items() if f.name in keys]
        if required:
            return "required (" + ", ".join(required) + ")"
        taken = [d for d, keys in config.DESCRIPTOR_KEYS.items() if f.name in keys]
        if taken:
            return ", ".join(f"{d}: {_code(v) if v is not None else 'automatic'}"
                             for d in taken for v in [_descriptor_default(d, f.name)])
    return "unset"


def _descriptors_taking(name):
    taken = [d for d, keys in config.DESCRIPTOR_KEYS.items() if name in keys]
    generic = name not in {k for keys in config.DESCRIPTOR_KEYS.values() for k in keys}
    return "all" if generic else ", ".join(taken)


def _gapfit_name(key, cls):
    name = key.split(".", 1)[1]
    if key in PARGAP_ONLY:
        return "pargap only"
    aliases = [a for a, target in config.GAP_STRING_ALIASES.items() if target == name]
    if cls is config.GapSettings and aliases:
        return "same; also " + ", ".join(f"`{a}`" for a in aliases)
    return "same"


def _row(cells):
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render():
    """The text of docs/config.md. Raises ValueError naming any setting without a description."""
    missing = missing_descriptions()
    if missing:
        raise ValueError(HOW_TO_FIX.format(keys=", ".join(missing)))
    out = [
        "# Settings reference",
        "",
        "<!-- Generated by `python -m pargap.cli.config_reference` from pargap/settings/config.py; do not edit by hand:",
        "     tests/test_docs.py fails when this file differs from the generator's output. -->",
        "",
        "pargap-fit reads these settings from a TOML file or from a gap_fit command line; the keys carry",
        "gap_fit's names and meanings. Units: eV, Angstrom (A), eV/A, virials in eV. Unknown keys are errors",
        "that name the key and suggest the closest valid one. Override any key from the command line with",
        "`--set key=value` (a TOML value; `--set gap.0.n_sparse=50` for the first model).",
        "`pargap-fit ... --print-config` prints the settings as TOML, so it turns a gap_fit command line",
        "into its TOML file.",
        "",
        "## Fit settings (top level of the TOML file)",
        "",
        _row(["key", "type", "default", "allowed values", "gap_fit", "description"]),
        _row(["---"] * 6),
    ]
    for f in dataclasses.fields(config.FitSettings):
        key = f"FitSettings.{f.name}"
        allowed = ", ".join(_code(v) for v in ALLOWED.get(key, ()))
        name = "`[[gap]]`" if f.name == "gap" else f"`{f.name}`"
        out.append(_row([name, _type_name(f.type), _default(config.FitSettings, f), allowed,
                         _gapfit_name(key, config.FitSettings), DESCRIPTIONS[key]]))
    out += [
        "",
        "## Model settings (each `[[gap]]` table; gap_fit: each entry of `gap={...}`)",
        "",
        "A gap_fit entry starts with the descriptor name: `gap={distance_2b cutoff=5.0 ... : soap ...}`.",
        "A descriptor setting given to a descriptor that does not take it is an error. The default of a",
        "descriptor setting left unset is the descriptor's own (gap_fit's); \"automatic\" ones follow from",
        "other settings.",
        "",
        _row(["key", "type", "default", "descriptors", "allowed values", "gap_fit", "description"]),
        _row(["---"] * 7),
    ]
    for f in dataclasses.fields(config.GapSettings):
        key = f"GapSettings.{f.name}"
        allowed = ", ".join(_code(v) for v in ALLOWED.get(key, ()))
        out.append(_row([f"`{f.name}`", _type_name(f.type), _default(config.GapSettings, f),
                         _descriptors_taking(f.name), allowed, _gapfit_name(key, config.GapSettings),
                         DESCRIPTIONS[key]]))
    out += [
        "",
        "## gap_fit options pargap does not take",
        "",
        "A gap_fit option pargap does not support is an error that says so, never silently ignored.",
        "Every option of `gap_fit --help` is accepted; the ones below are errors only where they are written.",
        "",
        _row(["gap_fit option", "why"]),
        _row(["---"] * 2),
    ]
    out += [_row([f"`{k}`", why]) for k, why in sorted(config.GAPFIT_UNSUPPORTED.items())]
    out += [
        "",
        "gap_fit options accepted without effect on the coefficients: "
        + ", ".join(f"`{k}`" for k in sorted(config.GAPFIT_NO_EFFECT)) + ".",
        "",
        "gap_fit options accepted and ignored, each with one log line: "
        + "; ".join(f"`{k}` ({why})" for k, why in sorted(config.GAPFIT_IGNORED.items())) + ".",
        "",
        "Options of a `gap={...}` entry that are errors (not supported yet): "
        + ", ".join(f"`{k}`" for k in sorted(config.GAP_STRING_UNSUPPORTED)) + ".",
        "",
        "Aliases in a `gap={...}` entry: " + ", ".join(
            f"`{a}` = `{t}`" for a, t in sorted(config.GAP_STRING_ALIASES.items())) + ".",
        "",
    ]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pargap.cli.config_reference",
                                description="Write the settings reference generated from pargap/settings/config.py.")
    p.add_argument("-o", "--output", default=str(OUTPUT), help=f"output file (default {OUTPUT})")
    p.add_argument("--check", action="store_true", help="exit 1 if the output file is out of date")
    args = p.parse_args(argv)
    try:
        text = render()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = Path(args.output)
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"{path} is out of date: run python -m pargap.cli.config_reference", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
