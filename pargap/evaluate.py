"""Errors of a potential on labelled structures: MAE and RMSE per observable and config type.

Energies are compared per atom (eV/atom), forces per component (eV/A), virials per component
per atom (eV/atom)."""

import numpy as np

from pargap.errors import InputError
from pargap.parallel import collective


def residuals(potential, structures, file=None):
    """[(config_type, kind, residuals array)] for this rank's structures (``file`` names them in errors)."""
    out = []
    for s in structures:
        want_grad = s.forces is not None or s.virial is not None
        try:
            p = potential.predict(s.atoms, gradients=want_grad)
        except InputError as exc:
            raise InputError(str(exc), file=file, structure=s.index) from None
        if s.energy is not None:
            out.append((s.config_type, "energy", np.array([(p["energy"] - s.energy) / s.n_atoms])))
        if s.forces is not None:
            out.append((s.config_type, "forces", (p["forces"] - s.forces).ravel()))
        if s.virial is not None:
            iu = np.triu_indices(3)
            out.append((s.config_type, "virial", (p["virial"] - s.virial)[iu] / s.n_atoms))
    return out


UNITS = {"energy": "eV/atom", "forces": "eV/A", "virial": "eV/atom"}


def error_table(comm, potential, structures, file=None):
    """{config_type or 'all': {kind: {'n', 'mae', 'rmse'}}}, reduced over ranks."""
    local = collective(comm, residuals, potential, structures, file)
    acc = {}
    for part in comm.allgather(_accumulate(local)):
        for key, (n, abs_sum, sq_sum) in part.items():
            a = acc.setdefault(key, [0, 0.0, 0.0])
            a[0] += n
            a[1] += abs_sum
            a[2] += sq_sum
    table = {}
    for (ct, kind), (n, abs_sum, sq_sum) in sorted(acc.items()):
        table.setdefault(ct, {})[kind] = {"n": n, "mae": abs_sum / n, "rmse": float(np.sqrt(sq_sum / n))}
    return table


def _accumulate(local):
    acc = {}
    for ct, kind, r in local:
        for key in ((ct, kind), ("all", kind)):
            a = acc.setdefault(key, [0, 0.0, 0.0])
            a[0] += r.size
            a[1] += float(np.abs(r).sum())
            a[2] += float((r**2).sum())
    return acc


def format_table(table):
    lines = [f"{'config_type':<20s} {'observable':<8s} {'n':>8s} {'MAE':>12s} {'RMSE':>12s}  unit"]
    order = ["all"] + sorted(k for k in table if k != "all")
    for ct in order:
        for kind in ("energy", "forces", "virial"):
            if kind in table.get(ct, {}):
                e = table[ct][kind]
                lines.append(f"{ct:<20s} {kind:<8s} {e['n']:>8d} {e['mae']:>12.6f} {e['rmse']:>12.6f}  {UNITS[kind]}")
    return "\n".join(lines)


