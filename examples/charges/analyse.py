"""The charge table: GAP charges vs per-molecule ESP (RESP-style) charges vs the talk's, and ESP RMSEs.

    python analyse.py out/charges_all.h5 out/charges_methanol_acetone.h5 [--markdown out/table.md]

For every geometry of methanol, ethanol and acetone (data/*.xyz):
- GAP: the charges predicted by the fitted charge model (pargap.potential.charges), and their ESP error;
- ESP fit ("RESP baseline", no restraint): the least-squares charges of that one geometry,
  min_q sum_k (Phi_k - C sum_a q_a / |r_k - r_a|)^2 subject to sum_a q_a = total charge (solved
  exactly with a Lagrange multiplier), and their ESP error, the best any fixed-charge model does.
Charges are averaged over the atoms of a class (O, H(O), H(C), C(O), C(beta)) and over geometries.
Atom classes come from the bonds (distance below 1.25 x the sum of covalent radii).
ESP RMSEs are in volts over all points of all geometries of the molecule.
"""

import argparse
import os

import numpy as np
from ase.data import covalent_radii
from ase.io import read

from pargap.potential.charges import coulomb_matrix, electrostatic_potential, predict_charges
from pargap.potential.potential import Potential

HERE = os.path.dirname(os.path.abspath(__file__))
MOLECULES = ("methanol", "ethanol", "acetone")
CLASSES = ("O", "H(O)", "C(O)", "C(beta)", "H(C)")
TALK = {  # the talk's GAP charges (e); in brackets there: ethanol from the methanol+acetone model
    "methanol": {"O": -0.69, "H(O)": 0.43, "C(O)": 0.29},
    "ethanol": {"O": -0.70, "H(O)": 0.40, "C(O)": 0.49, "C(beta)": -0.34},
    "acetone": {"O": -0.58, "C(O)": 0.80, "C(beta)": -0.51},
}
TALK_TRANSFER = {"ethanol": {"H(O)": 0.41, "C(O)": 0.46, "C(beta)": -0.29}}


def atom_classes(atoms):
    """Class label of every atom from its bonded neighbours."""
    z = atoms.numbers
    d = atoms.get_all_distances()
    bonded = (d < 1.25 * (covalent_radii[z][:, None] + covalent_radii[z][None, :])) & (d > 0)
    sym = atoms.get_chemical_symbols()
    out = []
    for a, s in enumerate(sym):
        partners = {sym[b] for b in np.flatnonzero(bonded[a])}
        if s == "O":
            out.append("O")
        elif s == "H":
            out.append("H(O)" if "O" in partners else "H(C)")
        else:
            out.append("C(O)" if "O" in partners else "C(beta)")
    return out


def esp_fit_charges(atoms):
    """Least-squares ESP charges of one geometry with sum q = total charge (KKT system)."""
    points = np.asarray(atoms.info["esp_points"], dtype=float).reshape(-1, 3)
    A = coulomb_matrix(points, atoms.positions)
    n = len(atoms)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = A.T @ A
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.concatenate([A.T @ np.asarray(atoms.info["esp_values"], dtype=float), [atoms.info["total_charge"]]])
    return np.linalg.solve(kkt, rhs)[:n]


def molecule_summary(frames, potential, total_charge=False):
    """Per-class mean charges (GAP and ESP fit), ESP RMSEs (V) and total-charge errors.
    total_charge: impose each frame's total charge on the GAP charges at prediction."""
    gap_q, fit_q = {c: [] for c in CLASSES}, {c: [] for c in CLASSES}
    err_gap, err_fit, total = [], [], []
    for atoms in frames:
        points = np.asarray(atoms.info["esp_points"], dtype=float).reshape(-1, 3)
        esp = np.asarray(atoms.info["esp_values"], dtype=float)
        q_gap = predict_charges(atoms, potential.charge_models,
                                atoms.info["total_charge"] if total_charge else None)
        q_fit = esp_fit_charges(atoms)
        err_gap.append(electrostatic_potential(points, atoms.positions, q_gap) - esp)
        err_fit.append(electrostatic_potential(points, atoms.positions, q_fit) - esp)
        total.append(q_gap.sum() - atoms.info["total_charge"])
        for a, c in enumerate(atom_classes(atoms)):
            gap_q[c].append(q_gap[a])
            fit_q[c].append(q_fit[a])
    rms = lambda e: float(np.sqrt(np.mean(np.concatenate(e) ** 2)))  # noqa: E731
    mean = lambda d: {c: (float(np.mean(v)), float(np.std(v))) for c, v in d.items() if v}  # noqa: E731
    return {"gap": mean(gap_q), "fit": mean(fit_q), "rmse_gap": rms(err_gap), "rmse_fit": rms(err_fit),
            "max_total_error": float(np.max(np.abs(total))), "frames": len(frames),
            "points": sum(len(a.info["esp_values"]) for a in frames)}


def table(all_model, transfer_model):
    lines = ["| molecule | atom | GAP, trained on all three | GAP, trained on methanol + acetone (sum q = 0 imposed) "
             "| ESP fit per geometry | talk (GAP) |", "| --- | --- | --- | --- | --- | --- |"]
    rmse = ["| molecule | geometries | ESP points | GAP, all three | GAP, methanol + acetone | same, sum q = 0 imposed "
            "| ESP fit per geometry | max abs sum q, GAP all three |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in MOLECULES:
        frames = read(os.path.join(HERE, "data", f"{name}.xyz"), ":")
        s = molecule_summary(frames, all_model)
        t = molecule_summary(frames, transfer_model)
        tq = molecule_summary(frames, transfer_model, total_charge=True)
        fmt = lambda d, c: f"{d[c][0]:+.2f} ({d[c][1]:.2f})" if c in d else ""  # noqa: E731
        for c in CLASSES:
            if c not in s["gap"]:
                continue
            talk = TALK[name].get(c)
            talk = "" if talk is None else f"{talk:+.2f}"
            if c in TALK_TRANSFER.get(name, {}):
                talk += f" ({TALK_TRANSFER[name][c]:+.2f})"
            lines.append(f"| {name} | {c} | {fmt(s['gap'], c)} | {fmt(tq['gap'], c)} | {fmt(s['fit'], c)} | {talk} |")
        unseen = " (unseen by the 2nd model)" if name == "ethanol" else ""
        rmse.append(f"| {name}{unseen} | {s['frames']} | {s['points']} | {s['rmse_gap']:.3f} | {t['rmse_gap']:.3f} | "
                    f"{tq['rmse_gap']:.3f} | {s['rmse_fit']:.3f} | {s['max_total_error']:.1e} |")
    return "\n".join(lines) + "\n\n" + "\n".join(rmse) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("all_model")
    p.add_argument("transfer_model")
    p.add_argument("--markdown", help="also write the tables to this file")
    args = p.parse_args(argv)
    text = table(Potential.load(args.all_model), Potential.load(args.transfer_model))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
