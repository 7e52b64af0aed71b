"""Errors of a potential on labelled structures: MAE and RMSE per observable and config type.

Energies are compared per atom (eV/atom), forces per component (eV/A), virials per component
per atom (eV/atom)."""

import numpy as np

from pargap.errors import InputError


def comparisons(potential, structures, file=None):
    """[(config_type, kind, reference, predicted)] for this rank's structures: energies per atom,
    force components, virial components per atom (``file`` names the structures in errors)."""
    out = []
    for s in structures:
        want_grad = s.forces is not None or s.virial is not None
        try:
            p = potential.predict(s.atoms, gradients=want_grad)
        except InputError as exc:
            raise InputError(str(exc), file=file, structure=s.index) from None
        if s.energy is not None:
            out.append((s.config_type, "energy", np.array([s.energy / s.n_atoms]), np.array([p["energy"] / s.n_atoms])))
        if s.forces is not None:
            out.append((s.config_type, "forces", s.forces.ravel(), p["forces"].ravel()))
        if s.virial is not None:
            iu = np.triu_indices(3)
            out.append((s.config_type, "virial", s.virial[iu] / s.n_atoms, p["virial"][iu] / s.n_atoms))
    return out


UNITS = {"energy": "eV/atom", "forces": "eV/A", "virial": "eV/atom"}


def error_table(comm, local):
    """{config_type or 'all': {kind: {'n', 'mae', 'rmse'}}} from every rank's ``comparisons``."""
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
    for ct, kind, ref, pred in local:
        r = pred - ref
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




def parity_plots(folder, gathered, max_points=200_000):
    """PNG files in ``folder``: <kind>.png, predicted against reference coloured by config type,
    for energy, forces and virial; errors.png, histograms of the errors. ``gathered``: the
    ``comparisons`` of all ranks. Returns the paths written."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    written = []
    kinds = [k for k in ("energy", "forces", "virial") if any(g[1] == k for g in gathered)]
    fig_h, axes_h = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), squeeze=False)
    for col, kind in enumerate(kinds):
        rows = [g for g in gathered if g[1] == kind]
        types = sorted({g[0] for g in rows})
        colours = plt.get_cmap("tab20" if len(types) > 10 else "tab10")
        fig, ax = plt.subplots(figsize=(5.5, 5))
        every = max(1, sum(len(g[2]) for g in rows) // max_points)
        for t, ct in enumerate(types):
            ref = np.concatenate([g[2] for g in rows if g[0] == ct])
            pred = np.concatenate([g[3] for g in rows if g[0] == ct])
            pick = slice(None) if every == 1 else rng.permutation(len(ref))[: max(1, len(ref) // every)]
            ax.scatter(ref[pick], pred[pick], s=6, alpha=0.6, label=ct, color=colours(t % colours.N))
        everything = np.concatenate([np.concatenate([g[2], g[3]]) for g in rows])
        lo, hi = float(everything.min()), float(everything.max())
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel(f"reference {kind} ({UNITS[kind]})")
        ax.set_ylabel(f"predicted {kind} ({UNITS[kind]})")
        if len(types) <= 20:
            ax.legend(fontsize=6, markerscale=2)
        fig.tight_layout()
        path = os.path.join(folder, f"{kind}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
        errors = np.concatenate([g[3] - g[2] for g in rows])
        axes_h[0, col].hist(errors, bins=60, color="tab:blue")
        axes_h[0, col].set_xlabel(f"{kind} error ({UNITS[kind]})")
        axes_h[0, col].set_yscale("log")
    fig_h.tight_layout()
    path = os.path.join(folder, "errors.png")
    fig_h.savefig(path, dpi=120)
    plt.close(fig_h)
    return written + [path]
