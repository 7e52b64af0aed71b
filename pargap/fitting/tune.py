"""Hyperparameter search by K-fold cross-validation: candidates from a TOML search file, their CV
errors (:mod:`pargap.fitting.cross_validation`), a table, a plot and the best settings.

Search file::

    method = "grid"        # "grid": every combination; "random": n_candidates draws;
                           # "halving": successive halving of the grid, or of n_candidates draws
                           # when the grid is larger than that
    seed = 1               # folds, draws and subsamples: the same seed, the same search
    n_candidates = 16      # random (and halving over random draws)
    fraction = 1.0         # grid/random: the share of the training structures used (to prune fast)
    min_fraction = 0.25    # halving: the share of the first rung; each rung multiplies it by eta
    eta = 3                # halving: each rung keeps the best 1/eta of the candidates
    include_base = true    # candidate 0 is the settings as given
    score = { energy = 1.0, forces = 1.0 }   # weights of the relative MAEs (below)

    [parameters]           # settings paths as for --set; "gap.*" means every gap entry
    "gap.1.cutoff" = [4.5, 5.0, 5.5]                       # choices
    "gap.1.atom_sigma" = { min = 0.3, max = 0.7 }          # random: uniform in [min, max]
    "default_sigma.0" = { min = 5e-4, max = 5e-3, log = true }   # random: log-uniform
    "gap.*.cutoff gap.1.cutoff_transition_width" = [[4.0, 0.5], [5.0, 1.0]]   # tied values

Score of a candidate within a rung (lower is better, 1 for one that is best in every observable):

    score = sum_kind w_kind MAE_kind / min_candidates MAE_kind  /  sum_kind w_kind

Outputs in the folder (default ``<gp_file stem>_tune``): ``cv_table.csv`` (one row per candidate
and rung), ``cv.json`` (the same with the per-fold errors and the search), ``cv_best.png`` (the
best candidates' per-fold and mean MAEs) and ``best.toml`` (the settings of the best candidate of
the last rung, ready for pargap-fit on the whole training file).
"""

import dataclasses
import itertools
import json
import math
import os

import numpy as np

from pargap.errors import ConfigError, PargapError
from pargap.fitting.cross_validation import KINDS, cross_validate, summarise
from pargap.settings.config import read_toml

METHODS = ("grid", "random", "halving")
SEARCH_KEYS = {"method", "seed", "n_candidates", "fraction", "min_fraction", "eta", "include_base", "score",
               "parameters"}


@dataclasses.dataclass(frozen=True)
class Search:
    """A parsed search file. parameters: ((paths tuple, spec), ...) where spec is a list of choices
    (tuples of values for tied paths) or {'min', 'max', 'log'} for a random draw."""

    parameters: tuple
    method: str = "grid"
    seed: int = 0
    n_candidates: int = 16
    fraction: float = 1.0
    min_fraction: float = 0.25
    eta: int = 3
    include_base: bool = True
    score: tuple = (("energy", 1.0), ("forces", 1.0))


def load_search(path):
    """Search from a TOML file; errors name the file and the key."""
    return search_from_dict(read_toml(path, "search"), path)


def search_from_dict(data, where="search"):
    unknown = sorted(set(data) - SEARCH_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(SEARCH_KEYS)}")
    method = data.get("method", "grid")
    if method not in METHODS:
        raise ConfigError(f"{where}: method must be one of {', '.join(METHODS)}, got '{method}'")
    params = []
    for key, spec in data.get("parameters", {}).items():
        paths = tuple(key.split())
        if isinstance(spec, dict):
            if set(spec) - {"min", "max", "log"} or not {"min", "max"} <= set(spec) or len(paths) != 1:
                raise ConfigError(f"{where}: parameters.'{key}': a range is {{ min = a, max = b, log = false }} "
                                  "of one setting")
            if method == "grid":
                raise ConfigError(f"{where}: parameters.'{key}': a range needs method = \"random\" or a "
                                  "\"halving\" of random draws (grid takes lists of choices)")
            lo, hi = float(spec["min"]), float(spec["max"])
            if not lo <= hi or (spec.get("log") and lo <= 0):
                raise ConfigError(f"{where}: parameters.'{key}': need min <= max (and min > 0 with log)")
            params.append((paths, {"min": lo, "max": hi, "log": bool(spec.get("log", False))}))
        elif isinstance(spec, list) and spec:
            choices = [tuple(v) if len(paths) > 1 else (v,) for v in spec]
            if any(len(c) != len(paths) for c in choices):
                raise ConfigError(f"{where}: parameters.'{key}': each choice needs {len(paths)} values")
            params.append((paths, choices))
        else:
            raise ConfigError(f"{where}: parameters.'{key}': give a non-empty list of choices or a range")
    if not params:
        raise ConfigError(f"{where}: no [parameters] to search")
    score = data.get("score", {"energy": 1.0, "forces": 1.0})
    if not isinstance(score, dict) or set(score) - set(KINDS) or not any(float(w) > 0 for w in score.values()):
        raise ConfigError(f"{where}: score is a table of weights of {', '.join(KINDS)}, one of them positive")
    values = {k: data[k] for k in ("seed", "n_candidates", "fraction", "min_fraction", "eta", "include_base")
              if k in data}
    search = Search(tuple(params), method, score=tuple((k, float(w)) for k, w in score.items()), **values)
    if not 0 < search.fraction <= 1 or not 0 < search.min_fraction <= 1:
        raise ConfigError(f"{where}: fraction and min_fraction lie in (0, 1]")
    if search.eta < 2 or search.n_candidates < 1:
        raise ConfigError(f"{where}: eta must be at least 2 and n_candidates at least 1")
    return search


def draw_candidates(search):
    """The candidates' overrides: a list of {path: value} (the first {} when include_base).

    Grid (and halving over a grid of at most n_candidates): the product of the choices, in file
    order. Random (and halving otherwise): each parameter drawn independently (rng seeded with ``search.seed``); duplicates are kept out."""
    if not search.parameters:  # no search: the settings as given
        return [{}]
    has_ranges = any(isinstance(s, dict) for _, s in search.parameters)
    grid_size = math.prod(len(s) for _, s in search.parameters) if not has_ranges else math.inf
    out = [{}] if search.include_base else []
    if search.method == "grid" or (search.method == "halving" and grid_size <= search.n_candidates):
        for combo in itertools.product(*[spec for _, spec in search.parameters]):
            out.append({p: v for (paths, _), values in zip(search.parameters, combo) for p, v in zip(paths, values)})
        return out
    rng = np.random.default_rng(search.seed)
    seen = set()
    for _ in range(100 * search.n_candidates):
        if len(out) - search.include_base >= search.n_candidates:
            break
        chosen = {}
        for paths, spec in search.parameters:
            if isinstance(spec, dict):
                u = rng.uniform(math.log(spec["min"]), math.log(spec["max"])) if spec["log"] else \
                    rng.uniform(spec["min"], spec["max"])
                chosen[paths[0]] = float(f"{math.exp(u) if spec['log'] else u:.3g}")
            else:
                choice = spec[rng.integers(len(spec))]
                chosen.update(zip(paths, choice))
        key = json.dumps(chosen, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(chosen)
    return out


def apply_candidate(settings, overrides):
    """FitSettings with ``overrides`` ({path: value}; 'gap.*.x' sets x in every gap entry)."""
    from pargap.settings.config import apply_overrides, settings_from_dict

    data = settings.to_dict()
    items = []
    for path, value in overrides.items():
        parts = path.split(".")
        if len(parts) > 2 and parts[1] == "*":
            items += [(".".join([parts[0], str(i)] + parts[2:]), value) for i in range(len(data.get(parts[0], [])))]
        else:
            items.append((path, value))
    apply_overrides(data, [f"{p}={json.dumps(v)}" for p, v in items])
    return settings_from_dict(data)


def rung_fractions(search):
    """The data fractions of the rungs: one rung (``fraction``) for grid and random;
    min_fraction * eta^r up to 1 for halving."""
    if search.method != "halving":
        return [search.fraction]
    fractions, f = [], search.min_fraction
    while f < 1:
        fractions.append(f)
        f *= search.eta
    return fractions + [1.0]


def scores(summaries, weights):
    """Score of each candidate (module docstring); inf for a failed one."""
    weights = dict(weights)
    best = {k: min((s[k]["mae"] for s in summaries if k in s), default=None) for k in weights}
    out = []
    for s in summaries:
        used = [(w, s[k]["mae"] / best[k]) for k, w in weights.items()
                if w > 0 and best[k] is not None and best[k] > 0 and k in s]
        out.append(sum(w * r for w, r in used) / sum(w for w, _ in used) if s and used else math.inf)
    return out


def subsample(n_structures, fraction, seed, always):
    """Nested subsamples: the first round(fraction * pool) of one seeded permutation of the
    structures that are not in ``always``, plus ``always``; None for fraction 1."""
    if fraction >= 1:
        return None
    pool = np.setdiff1d(np.arange(n_structures), always)
    order = np.random.default_rng(seed + 1).permutation(pool)
    return sorted(order[:max(2, int(round(fraction * len(pool))))].tolist() + list(always))


def tune(settings, search, comm, log, k=5, folder=None, n_groups=None):
    """Run the search on ``comm``: returns {'rows': one dict per candidate and rung, 'best':
    FitSettings of the best candidate}, the same on every rank."""
    from pargap.data.frames import scan_frames
    from pargap.fitting.cross_validation import isolated_atoms
    from pargap.parallel import collective, on_root

    folder = folder or output_folder(settings)
    if settings.rnd_seed < 0:  # a drawn seed would make every fit, hence the search, irreproducible
        settings = dataclasses.replace(settings, rnd_seed=search.seed)
    overrides = draw_candidates(search)
    candidates = collective(comm, lambda: [apply_candidate(settings, o) for o in overrides])
    index = on_root(comm, scan_frames, settings.at_file)
    always = sorted({i for c in candidates for i in isolated_atoms(c, index)})
    alive = list(range(len(candidates)))
    rows = []
    for rung, fraction in enumerate(rung_fractions(search)):
        which = subsample(len(index), fraction, search.seed, always)
        n = len(index) if which is None else len(which)
        log(f"tune: rung {rung}: {len(alive)} candidate(s), {k}-fold CV on {n} of {len(index)} structures")
        results = cross_validate([candidates[c] for c in alive], comm, log, k, search.seed, folder, n_groups,
                                 which, index)
        summaries = [summarise(r) for r in results]
        rung_scores = scores(summaries, search.score)
        for c, s, sc, folds in zip(alive, summaries, rung_scores, results):
            rows.append({"rung": rung, "fraction": fraction, "n_structures": n, "candidate": c,
                         "overrides": overrides[c], "score": sc, "errors": s,
                         "failure": next((f.failure for f in folds if f.failure), None),
                         "seconds": sum(f.seconds for f in folds)})
        ranked = [c for _, c in sorted(zip(rung_scores, alive))]
        if fraction < 1 and search.method == "halving":
            alive = sorted(ranked[:max(1, math.ceil(len(alive) / search.eta))])
        else:
            alive = ranked
    final = [r for r in rows if r["rung"] == rows[-1]["rung"]]
    best = min(final, key=lambda r: r["score"])
    if not math.isfinite(best["score"]):
        raise PargapError("tune: every candidate's fit failed; see the messages above")
    return {"rows": rows, "best": candidates[best["candidate"]], "best_candidate": best["candidate"],
            "folder": folder}


def output_folder(settings):
    """``<gp_file without .h5>_tune``."""
    stem = settings.gp_file[:-3] if settings.gp_file.endswith(".h5") else settings.gp_file
    return stem + "_tune"


def format_table(rows):
    """The candidates' CV errors as text, best first within each rung (energy meV/atom, forces
    and virial meV/A and meV/atom)."""
    head = (f"{'rung':>4s} {'cand':>4s} {'structs':>7s} {'E MAE':>8s} {'E RMSE':>8s} {'F MAE':>8s} {'F RMSE':>8s}"
            f" {'score':>7s}  settings")
    lines = [head]
    for rung in sorted({r["rung"] for r in rows}):
        for r in sorted((r for r in rows if r["rung"] == rung), key=lambda r: r["score"]):
            e, f = r["errors"].get("energy"), r["errors"].get("forces")
            cells = [f"{1000 * e['mae']:8.3f}" if e else f"{'-':>8s}", f"{1000 * e['rmse']:8.3f}" if e else f"{'-':>8s}",
                     f"{1000 * f['mae']:8.2f}" if f else f"{'-':>8s}", f"{1000 * f['rmse']:8.2f}" if f else f"{'-':>8s}"]
            text = describe_overrides(r["overrides"]) + (f"  FAILED: {r['failure']}" if r["failure"] else "")
            lines.append(f"{r['rung']:>4d} {r['candidate']:>4d} {r['n_structures']:>7d} " + " ".join(cells)
                         + f" {r['score']:7.3f}  {text}")
    lines.append("units: energy meV/atom, forces meV/A (K-fold CV means); score: weighted MAE relative to the "
                 "rung's best (1 = best in every observable)")
    return "\n".join(lines)


def describe_overrides(overrides):
    return " ".join(f"{p}={json.dumps(v)}" for p, v in overrides.items()) or "(settings as given)"


def write_report(result, settings, search, k):
    """cv_table.csv, cv.json, cv_best.png and best.toml in the result's folder (rank 0)."""
    folder, rows = result["folder"], result["rows"]
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "cv_table.csv"), "w") as fh:
            columns = [f"{kind}_{stat}" for kind in KINDS for stat in ("mae", "rmse")]
            fh.write("rung,fraction,n_structures,candidate,score," + ",".join(columns) + ",settings\n")
            for r in rows:
                cells = [repr(r["errors"][kind][stat]) if kind in r["errors"] else ""
                         for kind in KINDS for stat in ("mae", "rmse")]
                fh.write(f"{r['rung']},{r['fraction']},{r['n_structures']},{r['candidate']},{r['score']},"
                         + ",".join(cells) + ',"' + describe_overrides(r["overrides"]).replace('"', "'") + '"\n')
        with open(os.path.join(folder, "cv.json"), "w") as fh:
            json.dump({"folds": k, "search": dataclasses.asdict(search), "training_file": settings.at_file,
                       "units": {"energy": "eV/atom", "forces": "eV/A", "virial": "eV/atom"},
                       "best_candidate": result["best_candidate"], "rows": rows}, fh, indent=1, default=str)
        best = result["best"]
        with open(os.path.join(folder, "best.toml"), "w") as fh:
            fh.write(f"# pargap-tune: the best of {len({r['candidate'] for r in rows})} candidates by {k}-fold CV "
                     f"(candidate {result['best_candidate']}: "
                     f"{describe_overrides(_overrides_of(rows, result))})\n")
            fh.write(best.to_toml())
        plot(os.path.join(folder, "cv_best.png"), rows)
    except (OSError, ImportError) as exc:
        raise PargapError(f"tune: cannot write the outputs in {folder}: {exc}") from None


def _overrides_of(rows, result):
    return next(r["overrides"] for r in rows if r["candidate"] == result["best_candidate"])


def plot(path, rows, n_best=8):
    """Per-fold (dots) and mean (bars) MAE of the best ``n_best`` candidates of the last rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max(r["rung"] for r in rows)
    best = sorted((r for r in rows if r["rung"] == last and r["errors"]), key=lambda r: r["score"])[:n_best]
    kinds = [k for k in ("energy", "forces") if any(k in r["errors"] for r in best)]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(5 * max(1, len(kinds)), 4.2), squeeze=False)
    units = {"energy": "meV/atom", "forces": "meV/A"}
    x = np.arange(len(best))
    for ax, kind in zip(axes[0], kinds):
        means = [1000 * r["errors"][kind]["mae"] if kind in r["errors"] else np.nan for r in best]
        ax.bar(x, means, color="tab:blue", alpha=0.6, label="CV mean")
        for i, r in enumerate(best):
            folds = r["errors"].get(kind, {}).get("mae_folds", [])
            ax.plot([i] * len(folds), 1000 * np.asarray(folds), "k.", label="folds" if i == 0 else None)
        ax.set_xticks(x, [str(r["candidate"]) for r in best])
        ax.set_xlabel("candidate (best first)")
        ax.set_ylabel(f"{kind} MAE ({units[kind]})")
        ax.legend()
    fig.suptitle("cross-validation: the best candidates")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["Search", "load_search", "draw_candidates", "apply_candidate", "tune", "format_table", "write_report"]
