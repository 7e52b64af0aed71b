"""K-fold cross-validation of fit settings on the training file alone.

    folds:    one seeded permutation of the pool of structures cut into K parts whose sizes differ
              by at most one; fit k uses the other K-1 parts and is measured on part k
    CV MAE  = (1/K) sum_k MAE_k          CV RMSE = sqrt((1/K) sum_k RMSE_k^2)

per observable (energy per atom in eV/atom, force components in eV/A, virial components per atom
in eV/atom: :mod:`pargap.analysis.evaluate`'s errors). When e0 comes from isolated atoms
(``e0_method = "isolated"`` without ``e0``) the one-atom structures are in every training part and
never held out.

Parallel: the fits of (candidate, fold) jobs are independent, so the ranks are split into G groups
(sub-communicators) and each group fits its share of the jobs, one after another, on its ranks.
Independent fits need no communication between groups: G groups run G fits at once at the
efficiency of one rank each, where one fit spread over all ranks would pay its collectives and
its imbalance (0.95 on 2 ranks). A group of several ranks spreads a fit's rows over its ranks when
one fit does not fit in one rank's memory (``n_groups`` < ranks). The default is one group per rank,
at most one per job.

Each group's root copies the training and held-out structures of a job to files in ``folder``
(removed after the job), fits with :func:`pargap.fitting.fit.fit` and evaluates the potential in
memory. The errors of each finished fold fit are kept in ``folder/fold_fits`` (:data:`CACHE`), so a
search run again refits only what it lacks.
"""

import dataclasses
import math
import os

import numpy as np

from pargap.errors import ConfigError, PargapError

KINDS = ("energy", "forces", "virial")


def assign_folds(n_structures, k, seed, always=(), subset=None):
    """The K held-out parts of a K-fold split: a list of K sorted lists of structure indices.

    subset: the structure indices to split (default all ``n_structures``); always: indices kept
    in every training part and never held out. Part sizes differ by at most one. The same seed
    gives the same parts whatever the number of ranks."""
    pool = np.arange(n_structures) if subset is None else np.unique(np.asarray(subset, dtype=int))
    pool = np.setdiff1d(pool, np.asarray(sorted(set(always)), dtype=int))
    if not 2 <= k <= len(pool):
        raise ConfigError(f"cross-validation: {k} folds need 2 <= K <= the {len(pool)} structures that can "
                          "be held out")
    order = np.random.default_rng(seed).permutation(pool)
    return [sorted(part.tolist()) for part in np.array_split(order, k)]


def training_part(n_structures, folds, k, subset=None):
    """Sorted structure indices fitted in fold k: the subset (default all) minus held-out part k."""
    pool = range(n_structures) if subset is None else sorted(set(int(i) for i in subset))
    held = set(folds[k])
    return [i for i in pool if i not in held]


def isolated_atoms(settings, index):
    """Indices of one-atom structures when e0 comes from isolated atoms, else []."""
    if settings.e0 is None and settings.e0_method == "isolated":
        return [i for i, n in enumerate(index.n_atoms) if n == 1]
    return []


@dataclasses.dataclass
class FoldResult:
    """Errors of one (candidate, fold) fit on its held-out part: {kind: {'n', 'mae', 'rmse'}}
    (units of :data:`pargap.analysis.evaluate.UNITS`), or the error message of a failed fit."""

    candidate: int
    fold: int
    n_train: int
    n_test: int
    errors: dict
    seconds: float
    failure: str | None = None


def summarise(folds):
    """CV errors of one candidate from its FoldResults: {kind: {'mae', 'rmse', 'mae_folds'}}, the mean
    over the folds that have the observable; {} if any fold failed."""
    if any(f.failure for f in folds):
        return {}
    out = {}
    for kind in KINDS:
        have = [f.errors[kind] for f in folds if kind in f.errors]
        if have:
            maes = [e["mae"] for e in have]
            out[kind] = {"mae": float(np.mean(maes)),
                         "rmse": float(math.sqrt(np.mean([e["rmse"] ** 2 for e in have]))),
                         "mae_folds": maes}
    return out


def split_groups(comm, n_groups):
    """(group communicator, group number, number of groups): ranks split into ``n_groups`` groups
    of consecutive ranks (sizes differing by at most one). One group: ``comm`` itself."""
    size, rank = comm.Get_size(), comm.Get_rank()
    n_groups = max(1, min(int(n_groups), size))
    if n_groups == 1:
        return comm, 0, 1
    group = rank * n_groups // size
    return comm.Split(group, rank), group, n_groups


def cross_validate(candidates, comm, log, k=5, seed=0, folder=".", n_groups=None, subset=None, index=None):
    """K-fold CV errors of each FitSettings in ``candidates`` (all with the same at_file).

    subset: structure indices to use (default all; successive halving passes growing subsets);
    n_groups: groups of ranks fitting jobs at once (default: one per rank, at most one per job);
    index: the training file's FrameIndex, if already made.
    Returns, on every rank, one list of K FoldResults per candidate (a failed fit is recorded with
    its message, not raised)."""
    import time

    from pargap.data.frames import scan_frames
    from pargap.fitting.scan import data_hash as file_data_hash
    from pargap.fitting.learning_curve import copy_frames
    from pargap.parallel import collective, on_root

    first = candidates[0]
    if any(c.at_file != first.at_file for c in candidates):
        raise ConfigError("cross-validation: all candidates must use the same at_file")
    if any(g.sparse_method == "index_file" for c in candidates for g in c.gap):
        raise ConfigError("cross-validation: sparse_method=index_file refers to descriptors of the whole "
                          "training file; use another sparse_method")

    def plan():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise PargapError(f"cross-validation: cannot create {folder}: {exc}") from None
        return index or scan_frames(first.at_file)

    index = on_root(comm, plan)
    # the isolated atoms (if any candidate takes e0 from them) are never held out
    always = sorted({i for c in candidates for i in isolated_atoms(c, index)})
    folds = collective(comm, assign_folds, len(index), k, seed, always, subset)
    trains = [sorted(set(training_part(len(index), folds, f, subset)) | set(always)) for f in range(k)]
    data_hash = file_data_hash(comm, first.at_file)
    keys = {(c, f): job_key(candidates[c], trains[f], folds[f], data_hash)
            for c in range(len(candidates)) for f in range(k)}
    done = on_root(comm, lambda: {job: r for job, key in keys.items() if (r := read_cached(folder, key))})
    jobs = [job for job in keys if job not in done]
    if done:
        log(f"cross-validation: {len(done)} of {len(keys)} fold fits found in {os.path.join(folder, CACHE)}")
    n_groups = comm.Get_size() if n_groups is None else n_groups
    group_comm, group, n_groups = split_groups(comm, min(n_groups, len(jobs)))
    group_root = group_comm.Get_rank() == 0
    try:
        mine = []

        def run_jobs():
            for c, f in jobs[group::n_groups]:
                begin = time.perf_counter()
                try:
                    errors = fold_errors(candidates[c], group_comm, index, trains[f], folds[f], folder, group,
                                         copy_frames)
                    failure = None
                except PargapError as exc:
                    errors, failure = {}, str(exc)
                result = FoldResult(c, f, len(trains[f]), len(folds[f]), errors, time.perf_counter() - begin,
                                    failure)
                mine.append(result)
                if group_root:
                    if not failure:
                        write_cached(folder, keys[c, f], result)
                    if not log.quiet:
                        print("[pargap] " + describe(result), flush=True)

        collective(comm, run_jobs)
    finally:
        if group_comm is not comm:
            group_comm.Free()
    gathered = comm.allgather(mine if group_root else [])
    results = [[None] * k for _ in candidates]
    for (c, f), r in done.items():
        results[c][f] = dataclasses.replace(r, candidate=c, fold=f)
    for part in gathered:
        for r in part:
            results[r.candidate][r.fold] = r
    return results


CACHE = "fold_fits"
"""Sub-folder of a search's output folder with one JSON file per finished fold fit, named by
:func:`job_key`: a search run again (stopped, extended by candidates, or a halving rung at the
full data) refits only what it lacks."""


def job_key(settings, train, test, data_hash):
    """SHA-256 of what a fold fit's errors depend on: the settings (but gp_file), the fitted and the
    held-out structure indices, and the training file's SHA-256."""
    import hashlib
    import json

    text = dataclasses.replace(settings, gp_file="").to_toml()
    payload = json.dumps([text, list(map(int, train)), list(map(int, test)), data_hash])
    return hashlib.sha256(payload.encode()).hexdigest()


def read_cached(folder, key):
    """The FoldResult stored under ``key``, or None."""
    import json

    try:
        with open(os.path.join(folder, CACHE, key + ".json")) as fh:
            return FoldResult(**json.load(fh))
    except (OSError, ValueError, TypeError):
        return None


def write_cached(folder, key, result):
    """Store a finished fold fit's result (atomically: a stopped search leaves no half file)."""
    import json

    path = os.path.join(folder, CACHE, key + ".json")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            json.dump(dataclasses.asdict(result), fh)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # a cache that cannot be written costs a refit later, nothing else


def describe(result):
    """One line: a fold's errors in meV/atom and meV/A."""
    if result.failure:
        return f"cv candidate {result.candidate} fold {result.fold}: failed: {result.failure}"
    e, f = result.errors.get("energy"), result.errors.get("forces")
    parts = [f"E MAE {1000 * e['mae']:.3f} meV/atom" if e else "", f"F MAE {1000 * f['mae']:.2f} meV/A" if f else ""]
    return (f"cv candidate {result.candidate} fold {result.fold}: {result.n_train} fitted, {result.n_test} held out: "
            + ", ".join(p for p in parts if p) + f" ({result.seconds:.1f} s)")


def fold_errors(settings, comm, index, train, test, folder, tag, copy_frames):
    """Fit ``settings`` on the structures ``train`` of ``index`` and return its error table
    ('all' entry of :func:`pargap.analysis.evaluate.error_table`) on ``test``, on ``comm``."""
    from pargap.analysis.evaluate import comparisons, error_table
    from pargap.fitting.fit import fit
    from pargap.fitting.structures import load_structures
    from pargap.parallel import collective, on_root
    from pargap.progress import Log, PhaseTimer

    quiet = Log(comm, quiet=True)
    train_path = os.path.join(folder, f".cv_{tag}_train.xyz")
    test_path = os.path.join(folder, f".cv_{tag}_test.xyz")
    on_root(comm, lambda: (copy_frames(index, train, train_path), copy_frames(index, test, test_path)) and None)
    try:
        no_index = tuple(dataclasses.replace(g, print_sparse_index=None) for g in settings.gap)
        fitted = dataclasses.replace(settings, at_file=train_path, gap=no_index)
        potential = fit(fitted, comm, quiet, PhaseTimer(comm, quiet))
        held = dataclasses.replace(settings, at_file=test_path)
        structures, _ = load_structures(comm, held, quiet, check_sigma=False)
        local = collective(comm, comparisons, potential, structures, test_path)
        return error_table(comm, local).get("all", {})
    finally:
        if comm.Get_rank() == 0:
            for path in (train_path, test_path):
                if os.path.exists(path):
                    os.unlink(path)


__all__ = ["assign_folds", "training_part", "cross_validate", "summarise", "FoldResult"]
