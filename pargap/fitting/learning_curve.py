"""Learning curve: validation errors of fits on growing, nested subsets of the training structures.

    n_k = max(1, round(f_k * N_pool)),  subset_k = the first n_k structures of one seeded
    permutation of the pool (so subset_1 is in subset_2 is in ...), kept in file order

The pool is the training file minus the validation structures (a held-out fraction, drawn with the
same seed) and minus the one-atom structures, which join every subset when e0 comes from isolated
atoms (e0_method=isolated without e0). Each subset is copied byte for byte (extended XYZ; other
formats are re-written as extended XYZ by ASE) to a file in the output folder on rank 0 and fitted
by :func:`pargap.fitting.fit.fit` on all ranks; the file is removed after its fit. Errors on the
validation structures are :mod:`pargap.analysis.evaluate`'s: energy per atom (eV/atom), force components
(eV/A), virial components per atom (eV/atom).

Output folder: ``potential_<n>.h5`` per subset, ``learning_curve.csv`` and ``.json`` (one row
per subset: n_structures, n_atoms, fraction = n_structures / structures in at_file, then the MAE
and RMSE of energy, forces and virial; the JSON also lists each subset's 0-based structure indices
in the training file),
``learning_curve.png`` (log-log errors against the number of training structures) and, for a
held-out fraction, ``validation.xyz``.
"""

import dataclasses
import json
import os

import numpy as np

from pargap.errors import ConfigError, PargapError

DEFAULT_FRACTIONS = (0.1, 0.2, 0.4, 0.8, 1.0)
KINDS = ("energy", "forces", "virial")
COLUMNS = ("n_structures", "n_atoms", "fraction") + tuple(
    f"{kind}_{stat}" for kind in KINDS for stat in ("mae", "rmse"))


def parse_fractions(spec):
    """``None``/``""`` -> DEFAULT_FRACTIONS; ``"N"`` (an integer >= 1) -> N fractions doubling up
    to 1 (1/2^(N-1), ..., 1/2, 1); ``"0.1,0.3,1"`` -> those fractions, sorted, each in (0, 1]."""
    if spec is None or not str(spec).strip():
        return DEFAULT_FRACTIONS
    text = str(spec).strip()
    if text.isdigit():
        n = int(text)
        if n < 1:
            raise ConfigError(f"--learning-curve: the number of points must be at least 1, got {n}")
        return tuple(2.0 ** -(n - 1 - k) for k in range(n))
    try:
        values = sorted({float(v) for v in text.replace(",", " ").split()})
    except ValueError:
        raise ConfigError(f"--learning-curve: expected fractions such as 0.1,0.2,0.5,1 or a number of "
                          f"points, got '{text}'") from None
    bad = [v for v in values if not 0 < v <= 1]
    if bad or not values:
        raise ConfigError(f"--learning-curve: fractions must lie in (0, 1], got {bad or text}")
    return tuple(values)


def parse_validation(spec):
    """A held-out fraction in (0, 1) (float) or a file name (str)."""
    if spec is None:
        raise ConfigError("--learning-curve needs --validation FILE (labelled structures) or a fraction "
                          "of the training structures to hold out (e.g. --validation 0.2)")
    try:
        value = float(spec)
    except ValueError:
        return str(spec)
    if not 0 < value < 1:
        raise ConfigError(f"--validation: a held-out fraction must lie in (0, 1), got {value}")
    return value


def plan_subsets(n_structures, fractions, seed, always=(), held_out=0.0):
    """Nested subsets of structure indices 0..n_structures-1.

    always: indices in every subset and never held out (isolated atoms for e0). held_out: fraction
    of the remaining pool kept for validation (at least one structure when > 0). Returns
    (subsets: list of sorted index lists, one per distinct size, ascending; validation: sorted
    index list). The same seed gives the same subsets for any number of ranks."""
    always = sorted(set(always))
    pool = np.setdiff1d(np.arange(n_structures), always)
    order = np.random.default_rng(seed).permutation(pool)
    n_val = 0 if held_out == 0 else max(1, int(round(held_out * len(pool))))
    validation, order = sorted(order[:n_val].tolist()), order[n_val:]
    if len(order) == 0:
        raise ConfigError(f"no training structures left for the learning curve ({n_structures} in the "
                          f"file, {len(always)} isolated atoms, {n_val} held out)")
    sizes = sorted({max(1, int(round(f * len(order)))) for f in fractions})
    return [sorted(always + order[:n].tolist()) for n in sizes], validation


def copy_frames(index, which, path):
    """Write the frames ``which`` of an indexed file (pargap.data.frames.FrameIndex) to ``path``: a byte
    copy for extended XYZ, else ASE's extended XYZ writer."""
    from pargap.data.frames import read_frames

    try:
        if index.offsets is None:
            import ase.io

            ase.io.write(path, read_frames(index, which), format="extxyz")
            return
        with open(index.path, "rb") as src, open(path, "wb") as dst:
            for i in which:
                src.seek(index.offsets[i])
                end = index.offsets[i + 1] if i + 1 < len(index) else None
                text = src.read() if end is None else src.read(end - index.offsets[i])
                dst.write(text if text.endswith(b"\n") else text + b"\n")
    except OSError as exc:
        raise PargapError(f"learning curve: cannot write {path}: {exc}") from None


def output_folder(settings):
    """``<gp_file without .h5>_learning_curve``."""
    stem = settings.gp_file[:-3] if settings.gp_file.endswith(".h5") else settings.gp_file
    return stem + "_learning_curve"


def learning_curve(settings, comm, log, fractions=DEFAULT_FRACTIONS, validation=0.2, folder=None,
                   seed=None):
    """Fit on nested subsets of ``settings.at_file`` and evaluate on the validation structures.

    fractions: subset sizes as fractions of the pool; validation: a file name or a held-out fraction;
    folder: outputs (default :func:`output_folder`); seed: of the subsets and the split (default
    rnd_seed, or 0 when rnd_seed < 0). Returns the table rows (dicts with COLUMNS, errors as the
    'all' entries of pargap.analysis.evaluate.error_table, None where the validation data has no such
    observation), the same on every rank."""
    from pargap.analysis.evaluate import comparisons, error_table
    from pargap.data.frames import scan_frames
    from pargap.fitting.fit import fit
    from pargap.fitting.output import write_potential
    from pargap.fitting.structures import load_structures
    from pargap.parallel import collective, on_root
    from pargap.progress import PhaseTimer

    folder = folder or output_folder(settings)
    seed = seed if seed is not None else max(settings.rnd_seed, 0)

    def plan():
        if any(g.sparse_method == "index_file" for g in settings.gap):
            raise ConfigError("learning curve: sparse_method=index_file refers to descriptors of the whole "
                              "training file; use another sparse_method")
        index = scan_frames(settings.at_file)
        isolated = settings.e0 is None and settings.e0_method == "isolated"
        always = [i for i, n in enumerate(index.n_atoms) if n == 1] if isolated else []
        held_out = validation if isinstance(validation, float) else 0.0
        subsets, held = plan_subsets(len(index), fractions, seed, always, held_out)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise PargapError(f"learning curve: cannot create {folder}: {exc}") from None
        val_path = validation
        if held:
            val_path = os.path.join(folder, "validation.xyz")
            copy_frames(index, held, val_path)
        return index, subsets, val_path, len(held)

    index, subsets, val_path, n_held = on_root(comm, plan)
    log(f"learning curve: {len(subsets)} fits of {', '.join(str(len(s)) for s in subsets)} structures "
        f"(seed {seed}); validation on {val_path}" + (f" ({n_held} held out)" if n_held else ""))
    val_settings = dataclasses.replace(settings, at_file=val_path)
    val_structures, _ = load_structures(comm, val_settings, log, check_sigma=False)
    no_index = tuple(dataclasses.replace(g, print_sparse_index=None) for g in settings.gap)

    rows = []
    for which in subsets:
        n = len(which)
        subset_path = os.path.join(folder, f".subset_{n}.xyz")
        on_root(comm, copy_frames, index, which, subset_path)
        sub = dataclasses.replace(settings, at_file=subset_path, gap=no_index,
                                  gp_file=os.path.join(folder, f"potential_{n}.h5"))
        log(f"learning curve: fit on {n} structures ({sum(index.n_atoms[i] for i in which)} atoms)")
        try:
            potential = fit(sub, comm, log, PhaseTimer(comm, log))
        finally:
            # no barrier: when fit returns or raises on all ranks, every rank is past reading the
            # file (the collectives after the read saw to that); a rank-local error aborts the job
            if comm.Get_rank() == 0 and os.path.exists(subset_path):
                os.unlink(subset_path)
        write_potential(comm, potential, sub.gp_file)
        local = collective(comm, comparisons, potential, val_structures, val_path)
        table = error_table(comm, local).get("all", {})
        row = {"n_structures": n, "n_atoms": int(sum(index.n_atoms[i] for i in which)),
               "fraction": n / len(index)}
        for kind in KINDS:
            for stat in ("mae", "rmse"):
                row[f"{kind}_{stat}"] = table[kind][stat] if kind in table else None
        row["potential"] = sub.gp_file
        rows.append(row)
    on_root(comm, write_outputs, folder, rows, subsets, {"seed": seed, "training_file": settings.at_file,
                                                         "validation_file": val_path})
    return rows


def write_outputs(folder, rows, subsets, meta):
    """learning_curve.csv, .json and .png in ``folder`` (rank 0)."""
    try:
        with open(os.path.join(folder, "learning_curve.csv"), "w") as fh:
            fh.write(",".join(COLUMNS) + "\n")
            for row in rows:
                fh.write(",".join("" if row[c] is None else repr(row[c]) for c in COLUMNS) + "\n")
        with open(os.path.join(folder, "learning_curve.json"), "w") as fh:
            json.dump({**meta, "units": {"energy": "eV/atom", "forces": "eV/A", "virial": "eV/atom"},
                       "rows": rows, "subsets": subsets}, fh, indent=1)
        plot(os.path.join(folder, "learning_curve.png"), rows)
    except (OSError, ImportError) as exc:
        raise PargapError(f"learning curve: cannot write the outputs in {folder}: {exc}") from None


def plot(path, rows):
    """Log-log MAE and RMSE against the number of training structures, one panel per observable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from pargap.analysis.evaluate import UNITS

    kinds = [k for k in KINDS if any(r[f"{k}_mae"] is not None for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(4.5 * max(1, len(kinds)), 4), squeeze=False)
    n = [r["n_structures"] for r in rows]
    for ax, kind in zip(axes[0], kinds):
        for stat, marker in (("mae", "o-"), ("rmse", "s--")):
            ax.plot(n, [r[f"{kind}_{stat}"] for r in rows], marker, label=stat.upper())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # plain numbers at 1, 2, 5 x 10^k
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks(n, [str(v) for v in n])  # the subset sizes
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training structures")
        ax.set_ylabel(f"{kind} error ({UNITS[kind]})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("learning curve (validation errors)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_rows(rows):
    """The table as text: one line per subset."""
    head = f"{'structures':>10s} {'atoms':>8s}" + "".join(
        f" {k[:6] + ' ' + s.upper():>13s}" for k in KINDS for s in ("mae", "rmse"))
    lines = [head]
    for r in rows:
        cells = "".join(
            f" {'-' if r[f'{k}_{s}'] is None else format(r[f'{k}_{s}'], '.6f'):>13s}" for k in KINDS
            for s in ("mae", "rmse"))
        lines.append(f"{r['n_structures']:>10d} {r['n_atoms']:>8d}{cells}")
    lines.append("units: energy and virial eV/atom, forces eV/A")
    return "\n".join(lines)


def run(settings, comm, log, spec, validation):
    """pargap-fit --learning-curve: fit, evaluate, write the outputs and print the table (rank 0)."""
    from pargap.parallel import collective

    fractions, validation = collective(comm, lambda: (parse_fractions(spec), parse_validation(validation)))
    rows = learning_curve(settings, comm, log, fractions, validation)
    folder = output_folder(settings)
    if comm.Get_rank() == 0:
        print(format_rows(rows), flush=True)
    log(f"wrote {folder}/learning_curve.png, .csv and .json")
    return 0
