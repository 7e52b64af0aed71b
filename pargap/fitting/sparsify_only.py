"""gap_fit's sparsify_only_no_fit: choose the sparse points, write them, and stop.

Each model's points go to ``<gp_file>.sparseX.<k>`` (k = 0, 1, ... in model order, after species
expansion), in the form ``sparse_method=file`` reads: per point its cutoff weight, then its D
components, one number per line (written with full precision, so that a fit from the files
uses exactly these points). ``print_sparse_index`` files are written as in a fit. This is
gap_fit's workflow for large fits: choose the points once, then fit with ``sparse_method=file``
(or ``index_file``) on any number of ranks.
"""

import os

import numpy as np

from pargap.errors import PargapError
from pargap.fitting.fit import build_models
from pargap.fitting.models import draw_seed
from pargap.parallel import on_root


def sparse_point_file(gp_file, k):
    """Name of the sparse-point file of model k."""
    return f"{gp_file}.sparseX.{k}"


def write_sparse_points(path, x, weight):
    """One model's points in sparse_method=file form: weight, then x_1 .. x_D, per point;
    written to a temporary name, then renamed."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as fh:
            fh.writelines(f"{v!r}\n" for v in np.column_stack([weight, x]).ravel().tolist())
        os.replace(tmp, path)
    except OSError as exc:
        raise PargapError(f"sparsify_only_no_fit: cannot write {path}: {exc}") from None


def sparsify_only(settings, comm, log, timer):
    """Phases read, descriptors and sparse points of a fit, then the sparse-point files (rank 0).
    Returns the files written."""
    seed = draw_seed(comm, settings.rnd_seed)
    _, models, _, _, _ = build_models(settings, comm, log, timer, seed)
    paths = [sparse_point_file(settings.gp_file, k) for k in range(len(models))]

    def write():
        for path, m in zip(paths, models):
            write_sparse_points(path, m.sparse_x, m.sparse_weight)

    on_root(comm, write)  # a failure on rank 0 is raised on every rank
    for k, (path, m) in enumerate(zip(paths, models)):
        log(f"sparsify_only_no_fit: {m.n_sparse} sparse points of model {k} ({m.descriptor.name}) written to {path}")
    log(f"sparsify_only_no_fit: no fit (rnd_seed {seed})")
    return paths
