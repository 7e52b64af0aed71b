"""QUIP's GAP XML (gap_fit's ``gp_file``): written and read, so that a pargap potential runs in
quippy and LAMMPS (``pair_style quip``) and a gap_fit potential runs in pargap.

The file, as gap_fit writes it (libAtoms/GAP ``gap_fit_module`` and the ``gp_predict`` XML
handlers), is one root element named by the potential's label L:

    <L>
      <Potential label=L init_args="IP GAP label=L"/>      (with a core: "Sum init_args_pot1={core}
                                                            init_args_pot2={IP GAP label=L}")
      <Glue_params .../>                                    (only with a core: its glue XML; a
                                                            pair_table core as a glue without density)
      <GAP_params label=L gap_version=V>
        <GAP_data do_core="F|T"> <e0 Z= value=/> ... </GAP_data>
        <gpSparse label=L n_coordinate=C fitted="T">
          <gpCoordinates label=Lk dimensions=D signal_variance=delta signal_mean=f0
               sparsified="T" n_permutations="1" covariance_type="1 (ard_se) | 2 (dot_product)"
               [zeta=] n_sparseX=M sparseX_filename=F sparseX_md5sum=md5(F)>
            <theta> theta_1 .. theta_D </theta>             (ard_se only)
            <descriptor> init string, e.g. "soap cutoff=5 ... Z=14 species_Z={14 6}" </descriptor>
            <permutation i="1"> 1 .. D </permutation>
            <sparseX i=m alpha=alpha_m sparseCutoff=w_m/>   (m = 1..M)
          </gpCoordinates> ...
        </gpSparse>
      </GAP_params>
    </L>

and one text file F per coordinate beside it: the M x D sparse descriptors, one number per line,
point by point. QUIP's prediction is pargap's, eps(x) = w(x) sum_m alpha_m k(x, s_m) w_m with
k = delta^2 exp(-|x - s|^2_theta / 2) + f0^2 or delta^2 (x . s)^zeta, so alpha, w_m and the
hyperparameters are copied unchanged. Serial, no MPI; the GP factor (/gp) has no place in the XML.
"""

import hashlib
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from pargap.descriptors import make_descriptor
from pargap.errors import ConfigError, InputError
from pargap.gp.kernels import make_kernel
from pargap.gp.model import Model

GAP_VERSION = 1769700636
"""gap_version written: the one quippy-ase 0.10.3 (the current wheel) writes and reads. QUIP refuses
a file newer than its code."""

SOAP_TWO_L_PLUS_ONE = 1423143769
"""QUIP's SOAP has pargap's (2l+1)^-1/2 factor only in files of this gap_version or newer (QUIP passes
gap_version to the descriptor as xml_version; a file without one is version 0)."""

COVARIANCE_TYPES = {"ard_se": 1, "dot_product": 2}

# Options of the descriptor strings gap_fit writes that only concern the fit (sparsification,
# kernel settings, which the gpCoordinates attributes carry): ignored on reading.
FIT_OPTIONS = {
    "covariance_type", "delta", "theta_uniform", "theta_fac", "theta_file", "zeta", "f0", "n_sparse",
    "sparse_method", "config_type_n_sparse", "sparse_file", "print_sparse_index", "mark_sparse_atoms",
    "add_species", "unique_hash_tolerance", "unique_descriptor_tolerance", "lengthscale_factor",
    "lengthscale_uniform", "lengthscale_file", "sparse_jitter", "n_sparsex", "xml_version",
}

DESCRIPTOR_OPTIONS = {
    "distance_2b": {"cutoff": float, "cutoff_transition_width": float, "z1": int, "z2": int},
    "angle_3b": {"cutoff": float, "cutoff_transition_width": float, "z": int, "z_center": int,
                 "z1": int, "z2": int},
    "soap": {"cutoff": float, "cutoff_transition_width": float, "l_max": int, "n_max": int,
             "atom_sigma": float, "central_weight": float, "n_species": int, "species_z": "ints",
             "z": int, "normalise": bool, "normalize": bool, "covariance_sigma0": float,
             "basis_error_exponent": float, "central_reference_all_species": bool},
}
"""Options of QUIP's descriptor strings pargap reads (lower case, as QUIP's parser is
case-insensitive); the value type. Options at their QUIP defaults are also accepted:"""

DEFAULT_OPTIONS = {"n_exponents": "1", "exponents": "1", "tail_exponent": "0", "radial_basis": "",
                   "cutoff_dexp": "0", "nu_r": "2", "nu_s": "2", "coupling": "T", "z_mix": "F",
                   "r_mix": "F", "sym_mix": "F", "diagonal_radial": "F", "only_intra": "F",
                   "only_inter": "F", "n_z": "1"}


# ---- writing -----------------------------------------------------------------------------------

def descriptor_string(descriptor):
    """QUIP's init string of a pargap descriptor (what ``<descriptor>`` holds)."""
    p = descriptor.params()
    if descriptor.name == "distance_2b":
        keys = ("cutoff", "cutoff_transition_width", "Z1", "Z2")
    elif descriptor.name == "angle_3b":
        keys = ("cutoff", "cutoff_transition_width", "Z", "Z1", "Z2")
    elif descriptor.name == "soap":
        keys = ("cutoff", "cutoff_transition_width", "l_max", "n_max", "atom_sigma", "central_weight",
                "n_species", "Z", "species_Z", "normalise", "covariance_sigma0", "basis_error_exponent",
                "central_reference_all_species")
        if list(p["species_Z"]) == [0]:  # any neighbour species: QUIP's default for n_species = 1
            keys = tuple(k for k in keys if k != "species_Z")
    else:
        raise ConfigError(f"descriptor '{descriptor.name}' has no QUIP XML form in pargap")
    unwritten = set(p) - set(keys) - {"species_Z"}
    if unwritten:  # a setting QUIP would not see: its numbers would differ from pargap's
        raise ConfigError(f"descriptor '{descriptor.name}': no QUIP XML form for {sorted(unwritten)}")
    return " ".join([descriptor.name] + [f"{k}={_quip_value(p[k])}" for k in keys])


def _quip_value(value):
    if isinstance(value, (bool, np.bool_)):
        return "T" if value else "F"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "{" + " ".join(_quip_value(v) for v in value) + "}"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def core_xml(core, path):
    """(QUIP init_args, XML text) of pargap's core potential: a glue core as it was read; a pair table
    as QUIP's glue with zero density and embedding and the same pair splines (natural at the first
    point, slope 0 at the last); a ConfigError for anything QUIP cannot express."""
    if core.kind == "glue":
        return core.ip_args.strip().strip("{}"), re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", core.text).rstrip()
    if core.kind != "pair_table":
        raise ConfigError(f"cannot write {path}: QUIP XML has no form for pargap's '{core.kind}' core potential; "
                          "keep the HDF5 file")
    species = sorted({z for pair in core.pair for z in pair})
    types = {z: t for t, z in enumerate(species, start=1)}
    lines = [f'<Glue_params n_types="{len(species)}">']
    for z in species:  # no density (phi = 0 fitted through zeros), no embedding: a pure pair potential
        lines += [f'  <per_type_data atomic_num="{z}" type="{types[z]}">',
                  '    <density num_points="2" density_y1="0.0" density_yn="0.0">'
                  ' <point a="0.5" rho="0.0"/> <point a="1.0" rho="0.0"/> </density>',
                  '    <potential_density num_points="2"> <point rho="0.0" E="0.0"/> <point rho="1.0" E="0.0"/>'
                  ' </potential_density>', "  </per_type_data>"]
    for (z1, z2), spline in sorted(core.pair.items()):
        lines.append(f'  <per_pair_data type1="{types[z1]}" type2="{types[z2]}">')
        lines.append(f'    <potential_pair num_points="{len(spline.x)}" y1="2e30" yn="0.0">')
        lines += [f'      <point r="{float(r)!r}" E="{float(e)!r}"/>' for r, e in zip(spline.x, spline.y)]
        lines += ["    </potential_pair>", "  </per_pair_data>"]
    lines.append("</Glue_params>")
    return "IP Glue", "\n".join(lines)


def save(potential, path, label=None):
    """Write ``potential`` as QUIP GAP XML at ``path`` plus one sparseX file per model beside it
    (``<path>.sparseX.<label><k>``), all atomically: temporary names, then renames, the XML last; then
    the sparseX files of an earlier potential at ``path`` are removed. Returns the label (LAMMPS: ``pair_coeff * * path "Potential xml_label=<label>" Z...``)."""
    path = os.fspath(path)
    if potential.charge_models:
        raise ConfigError(f"cannot write {path}: QUIP XML has no form for pargap's charge models; keep the HDF5 file")
    if not potential.models:
        raise ConfigError(f"cannot write {path}: the potential has no energy model")
    label = label or time.strftime("GAP_%Y_%m_%d_%H_%M_%S", time.gmtime()) + f"_{time.time_ns() // 1000 % 1000000}"
    core = core_xml(potential.core, path) if potential.core is not None else None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    files, parts = [], []
    try:
        for k, model in enumerate(potential.models, start=1):
            name = f"{base}.sparseX.{label}{k}"
            text = "".join(f"{v:.20e}\n" for v in np.asarray(model.sparse_x, dtype=float).ravel())
            files.append((_write_temp(folder, text), os.path.join(folder, name)))
            parts.append(_coordinate_xml(model, f"{label}{k}", name, hashlib.md5(text.encode()).hexdigest()))
        xml = _potential_xml(potential, label, parts, core)
        files.append((_write_temp(folder, xml), os.path.join(folder, base)))
        for tmp, final in files:
            os.replace(tmp, final)
    except BaseException:
        for tmp, _ in files:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    _remove_stale_sparse_files(folder, base, {os.path.basename(final) for _, final in files})
    return label


def _remove_stale_sparse_files(folder, base, written):
    """Remove the ``<base>.sparseX.*`` files of an earlier save to the same path (another label or
    more models) that the XML just written does not name; nothing else."""
    prefix = f"{base}.sparseX."
    for name in os.listdir(folder):
        if name.startswith(prefix) and name not in written:
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def _write_temp(folder, text):
    fd, tmp = tempfile.mkstemp(prefix=".pargap-", suffix=".xml.tmp", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:  # XML without a declaration is UTF-8
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _coordinate_xml(model, label, filename, md5):
    kernel = model.kernel
    attrs = {"label": label, "dimensions": model.descriptor.dimension, "signal_variance": repr(kernel.delta)}
    if kernel.name == "ard_se":
        attrs["signal_mean"] = repr(kernel.f0)
    elif kernel.name == "dot_product":
        attrs["signal_mean"] = "0.0"
    else:
        raise ConfigError(f"kernel '{kernel.name}' has no QUIP XML form")
    attrs |= {"sparsified": "T", "n_permutations": 1, "covariance_type": COVARIANCE_TYPES[kernel.name]}
    if kernel.name == "dot_product":
        attrs["zeta"] = repr(kernel.zeta)
    attrs |= {"n_sparseX": model.n_sparse, "sparseX_filename": filename, "sparseX_md5sum": md5}
    lines = ["    <gpCoordinates " + " ".join(f"{k}={quoteattr(str(v))}" for k, v in attrs.items()) + ">"]
    if kernel.name == "ard_se":
        lines.append("      <theta> " + " ".join(repr(float(t)) for t in kernel.theta) + " </theta>")
        permutation = " ".join(str(d + 1) for d in range(model.descriptor.dimension))
    else:
        permutation = "1"
    lines.append(f"      <descriptor>{escape(descriptor_string(model.descriptor))}</descriptor>")
    lines.append(f'      <permutation i="1">{permutation}</permutation>')
    for m, (a, w) in enumerate(zip(model.alpha, model.sparse_weight), start=1):
        lines.append(f'      <sparseX i="{m}" alpha="{float(a)!r}" sparseCutoff="{float(w)!r}"/>')
    lines.append("    </gpCoordinates>")
    return "\n".join(lines)


def _potential_xml(potential, label, coordinates, core):
    gap_args = f"IP GAP label={label}"
    init_args = gap_args if core is None else f"Sum init_args_pot1={{{core[0]}}} init_args_pot2={{{gap_args}}}"
    out = [f"<{label}>", f"<Potential label={quoteattr(label)} init_args={quoteattr(init_args)}/>"]
    if core is not None:
        out.append(core[1])
    out.append(f'<GAP_params label={quoteattr(label)} gap_version="{GAP_VERSION}">')
    out.append(f'  <GAP_data do_core="{"F" if core is None else "T"}">')
    out += [f'    <e0 Z="{z}" value="{potential.e0[z]!r}"/>' for z in sorted(potential.e0)]
    out.append("  </GAP_data>")
    out.append(f'  <gpSparse label={quoteattr(label)} n_coordinate="{len(coordinates)}" fitted="T">')
    out += coordinates
    out.append("  </gpSparse>")
    if potential.settings:
        out.append(f"  <pargap_settings><![CDATA[{potential.settings}]]></pargap_settings>")
    out += ["</GAP_params>", f"</{label}>", ""]
    return "\n".join(out)


# ---- reading -----------------------------------------------------------------------------------

def read(path):
    """The parts of a potential (the keyword arguments of :class:`~pargap.potential.potential.Potential`:
    models, e0, settings, provenance, core) from QUIP GAP XML (gap_fit's or pargap's) and its sparseX
    files (found beside the XML, else relative to the current folder). Errors name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError("no such potential file", file=path)
    try:
        root = _parse(path)
    except ET.ParseError as exc:
        raise InputError(f"not valid XML ({exc})", file=path) from None
    pots = [p for p in root.iter("Potential")]
    init_args = pots[0].get("init_args", "") if pots else ""
    gap_args, core_args = _split_init_args(init_args, path)
    label = dict(re.findall(r"(\w+)=(\S+)", gap_args)).get("label")
    blocks = [b for b in root.iter("GAP_params") if label is None or b.get("label") == label]
    if not blocks:
        raise InputError(f"no <GAP_params{'' if label is None else f' label={label!r}'}> element: "
                         "not a GAP potential", file=path)
    gap = blocks[0]
    e0 = {}
    for e in gap.iter("e0"):
        e0[int(e.get("Z"))] = float(e.get("value").replace("D", "E"))
    data = gap.find("GAP_data")
    e0_all = float(data.get("e0")) if data is not None and data.get("e0") is not None else 0.0  # older files
    sparse = gap.find("gpSparse")
    if sparse is None:
        raise InputError("no <gpSparse> element in <GAP_params>", file=path)
    models = [_read_coordinate(c, path) for c in sparse.iter("gpCoordinates")]
    if not models:
        raise InputError("<gpSparse> holds no <gpCoordinates>", file=path)
    version = gap.get("gap_version", "0").strip() or "0"
    if not version.isdigit():
        raise InputError(f"<GAP_params gap_version={version!r}>: not an integer", file=path)
    if any(m.descriptor.name == "soap" for m in models) and int(version) < SOAP_TWO_L_PLUS_ONE:
        raise InputError(f"gap_version={version}: QUIP's SOAP of files older than {SOAP_TWO_L_PLUS_ONE} has no "
                         "(2l+1)^-1/2 factor, pargap's has; pargap cannot evaluate this potential", file=path)
    used = set()
    for m in models:
        p = m.descriptor.params()
        used |= {int(p[k]) for k in ("Z", "Z1", "Z2") if k in p} | {int(z) for z in p.get("species_Z", ())}
    if 0 not in used:  # species no model covers and with e0 = 0 (gap_fit lists all 116) are unknown
        e0 = {z: v for z, v in e0.items() if v != 0.0 or z in used}
    e0 |= {z: e0_all for z in used - {0} if z not in e0}
    core = _read_core(root, core_args, path) if core_args else None
    settings = gap.find("pargap_settings")
    command = gap.find("command_line")
    provenance = {"source": "QUIP GAP XML", "file": os.path.abspath(path),
                  "gap_version": gap.get("gap_version", ""),
                  "command_line": (command.text or "").strip() if command is not None else ""}
    return {"models": models, "e0": e0, "settings": settings.text if settings is not None else "",
            "provenance": provenance, "core": core}


def _parse(path):
    """The XML tree without gap_fit's (possibly huge) <XYZ_data> training set."""
    stack, root = [], None
    for event, element in ET.iterparse(path, events=("start", "end")):
        if event == "start":
            stack.append(element)
            root = root if root is not None else element
        else:
            stack.pop()
            if element.tag == "XYZ_data" and stack:
                stack[-1].remove(element)
    return root


def _split_init_args(init_args, path):
    """(GAP's init args, core's init args or "") from <Potential init_args>."""
    words = init_args.split()
    if not words:
        return "", ""
    if words[0].lower() == "sum":
        parts = dict(re.findall(r"(init_args_pot[12])\s*=\s*\{([^}]*)\}", init_args))
        one, two = parts.get("init_args_pot1", ""), parts.get("init_args_pot2", "")
        if "gap" in two.lower().split():
            return two, one
        if "gap" in one.lower().split():
            return one, two
        raise InputError(f"init_args '{init_args}': a Sum without an 'IP GAP' part", file=path)
    if len(words) >= 2 and words[0].upper() == "IP" and words[1].upper() == "GAP":
        return init_args, ""
    raise InputError(f"init_args '{init_args}' is not a GAP potential ('IP GAP ...' or 'Sum ...')", file=path)


def _read_core(root, core_args, path):
    from pargap.baselines.core_potential import CorePotential

    words = core_args.split()
    if not (len(words) >= 2 and words[0].upper() == "IP" and words[1].lower() == "glue"):
        raise InputError(f"core potential '{core_args}' is not supported by pargap (it reads 'IP Glue' cores)",
                         file=path)
    glue = next(root.iter("Glue_params"), None)
    if glue is None:
        raise InputError(f"core '{core_args}' named in init_args, but no <Glue_params> in the file", file=path)
    return CorePotential.from_text("glue", ET.tostring(glue, encoding="unicode"), core_args, source=path)


def parse_descriptor_string(text):
    """QUIP's descriptor init string -> (name, {lower-case key: value string})."""
    text = text.strip()
    name, _, rest = text.partition(" ")
    options = {}
    for key, value in re.findall(r"([A-Za-z_]\w*)\s*=\s*(\{[^}]*\}|\"[^\"]*\"|'[^']*'|\S+)", rest):
        options[key.lower()] = value.strip("{}\"'").strip()
    return name.lower(), options


def _descriptor(text, where):
    name, options = parse_descriptor_string(text)
    if name not in DESCRIPTOR_OPTIONS:
        raise InputError(f"descriptor '{name}' is not implemented in pargap (it has "
                         f"{', '.join(sorted(DESCRIPTOR_OPTIONS))})", file=where)
    known = DESCRIPTOR_OPTIONS[name]
    params = {}
    for key, value in options.items():
        if key in FIT_OPTIONS:
            continue
        if key in DEFAULT_OPTIONS:
            if value.strip().upper() != DEFAULT_OPTIONS[key].upper():
                raise InputError(f"descriptor {name}: option {key}={value} is not implemented in pargap", file=where)
            continue
        if key not in known:
            raise InputError(f"descriptor {name}: option '{key}' is not implemented in pargap", file=where)
        kind = known[key]
        try:
            if kind == "ints":
                parsed = [int(v) for v in value.split()]
            elif kind is bool:
                parsed = value.strip().upper() in ("T", "TRUE", ".TRUE.", "1")
            elif kind is int:
                parsed = int(value)
            else:
                parsed = float(value.replace("D", "E").replace("d", "e"))
        except ValueError:
            raise InputError(f"descriptor {name}: option {key}={value} is not a valid {kind}", file=where) from None
        params[{"z": "Z", "z_center": "Z", "z1": "Z1", "z2": "Z2", "species_z": "species_Z",
                "normalize": "normalise"}.get(key, key)] = parsed
    if name == "soap" and "species_Z" not in params and params.get("n_species", 1) == 1:
        params["species_Z"] = [0]
    try:
        return make_descriptor(name, **params)
    except ConfigError as exc:
        raise InputError(str(exc), file=where) from None


def _read_coordinate(element, path):
    label = element.get("label", "?")
    where = f"{path} (gpCoordinates {label})"
    text = element.findtext("descriptor")
    if text is None:
        raise InputError("no <descriptor> element", file=where)
    descriptor = _descriptor(text, where)
    D = int(element.get("dimensions", -1))
    if D != descriptor.dimension:
        raise InputError(f"dimensions={D}, but descriptor '{text.strip()}' has {descriptor.dimension}", file=where)
    if element.get("n_permutations", "1").strip() != "1":
        raise InputError("permutation-symmetrised coordinates (n_permutations > 1) are not implemented in pargap",
                         file=where)
    ctype = int(element.get("covariance_type", 0))
    delta = float(element.get("signal_variance"))
    f0 = float(element.get("signal_mean", 0.0))
    if ctype == COVARIANCE_TYPES["ard_se"]:
        theta = np.array(element.findtext("theta", "").split(), dtype=float)
        kernel = make_kernel("ard_se", dimension=D, delta=delta, theta=theta, f0=f0)
    elif ctype == COVARIANCE_TYPES["dot_product"]:
        kernel = make_kernel("dot_product", dimension=D, delta=delta, zeta=float(element.get("zeta")))
    else:
        raise InputError(f"covariance_type={ctype} is not implemented in pargap (1 = ard_se, 2 = dot_product)",
                         file=where)
    points = element.findall("sparseX")
    M = int(element.get("n_sparseX", len(points)))
    if len(points) != M:
        raise InputError(f"n_sparseX={M}, but {len(points)} <sparseX> elements", file=where)
    order = np.argsort([int(p.get("i")) for p in points])
    alpha = np.array([float(points[i].get("alpha")) for i in order])
    weight = np.array([float(points[i].get("sparseCutoff", 1.0)) for i in order])
    sparse_x = _read_sparse_x(element, path, where, M, D)
    return Model(descriptor, kernel, sparse_x, weight, alpha)


def _read_sparse_x(element, path, where, M, D):
    """The (M, D) sparse points from the coordinate's sparseX file, its md5 checked (older files: the
    points inside the <sparseX> elements)."""
    name = element.get("sparseX_filename")
    if name is None:
        text = " ".join((p.text or "") for p in sorted(element.findall("sparseX"), key=lambda p: int(p.get("i"))))
        return _points(text, M, D, "no sparseX_filename, and the <sparseX> elements", where)
    candidates = [os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(name)), name]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise InputError(f"sparseX file '{name}' is missing (looked beside the XML and in the current folder)",
                         file=where)
    with open(found, "rb") as fh:
        data = fh.read()
    md5 = element.get("sparseX_md5sum")
    if md5 and hashlib.md5(data).hexdigest() != md5.strip():
        raise InputError(f"sparseX file {found}: md5 {hashlib.md5(data).hexdigest()} differs from the "
                         f"sparseX_md5sum {md5} in the XML (truncated or changed?)", file=where)
    return _points(data, M, D, f"sparseX file {found}", where)


def _points(text, M, D, source, where):
    """The (M, D) array of the whitespace-separated numbers in ``text``; an error naming ``source``
    if they are not numbers or not M x D of them (a truncated file)."""
    try:
        values = np.array(text.split(), dtype=float)
    except ValueError as exc:
        raise InputError(f"{source}: not numbers ({exc})", file=where) from None
    if values.size != M * D:
        raise InputError(f"{source}: {values.size} numbers, expected n_sparseX x dimensions = {M} x {D} "
                         "(truncated?)", file=where)
    return values.reshape(M, D)
