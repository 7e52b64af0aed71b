#!/usr/bin/env python3
"""Build the pargap Ta example data (examples/Ta_train.xyz, examples/Ta_test.xyz).

Source: Ta SNAP training data of Thompson et al., J. Comput. Phys. 285, 316 (2015), as
distributed with FitSNAP (github.com/FitSNAP/FitSNAP @ 1a9b0507fa2ba292a6497ec363707944c1cb89cd,
examples/Ta_XYZ/XYZ, GPL-2.0), in the 295-config extxyz file of examples/data/ta_snap_thompson2015.

What this script does (see examples/README.md):
  * split: within each config_type, in file order, the config with 0-based index k goes to
    the test file if k % 5 == 2, otherwise to train; a config_type with < 5 configs goes
    entirely to train.
  * stress (bar, LAMMPS/VASP pressure convention, compressive positive) -> GAP virial (eV):
        W = P_bar * 1e-4 / 160.21766208 * V,   V = |det(lattice)|
    (equivalently W = -sigma_ASE * V with sigma_ASE = -P_bar * 1e-4 / 160.21766208 eV/A^3).
    The `stress` key is dropped.
  * positions, forces, energy and lattice are written unchanged (float repr round-trip).

Usage (from the repository root):
    python3 examples/make_ta_example.py [SOURCE_XYZ]
SOURCE_XYZ defaults to the plain copy of ta_snap_thompson2015/Ta_train.xyz that examples/fetch.py
gives. Output goes next to this script. Only the standard library is used.
"""
import argparse
import os
import re
import shlex
import sys
from collections import OrderedDict

EV_PER_A3_IN_GPA = 160.21766208  # 1 eV/A^3 = 160.21766208 GPa
GPA_PER_BAR = 1e-4

HERE = os.path.dirname(os.path.abspath(__file__))
TA_SOURCE = "ta_snap_thompson2015/Ta_train.xyz"  # a name of examples/fetch.py
PROPERTIES = "species:S:1:pos:R:3:forces:R:3"


def parse_header(line):
    """Parse an extxyz comment line of key=value / key="quoted value" pairs."""
    # tolerate the original FitSNAP spelling `Lattice = "..."`
    line = re.sub(r"\s*=\s*", "=", line)
    info = OrderedDict()
    for tok in shlex.split(line):
        key, _, val = tok.partition("=")
        info[key] = val
    return info


def read_frames(path):
    with open(path) as f:
        lines = f.read().splitlines()
    frames = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        nat = int(lines[i])
        info = parse_header(lines[i + 1])
        if info.get("Properties") != PROPERTIES:
            raise ValueError("unexpected Properties in frame %d: %r" % (len(frames), info.get("Properties")))
        atoms = []
        for line in lines[i + 2:i + 2 + nat]:
            p = line.split()
            if len(p) != 7:
                raise ValueError("bad atom line: %r" % line)
            atoms.append((p[0], [float(x) for x in p[1:4]], [float(x) for x in p[4:7]]))
        if len(atoms) != nat:
            raise ValueError("truncated frame %d" % len(frames))
        frames.append({"info": info, "atoms": atoms})
        i += 2 + nat
    return frames


def det3(m):
    return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))


def lattice(info):
    v = [float(x) for x in info["Lattice"].split()]
    return [v[0:3], v[3:6], v[6:9]]


def volume(info):
    return abs(det3(lattice(info)))


def virial_from_stress_bar(stress_bar, vol):
    """GAP virial (eV) from a pressure tensor in bar (compressive positive)."""
    return [p * GPA_PER_BAR / EV_PER_A3_IN_GPA * vol for p in stress_bar]


def fmt(values):
    return " ".join(repr(float(x)) for x in values)


def write_frames(path, frames):
    with open(path, "w") as f:
        for fr in frames:
            info = fr["info"]
            stress = [float(x) for x in info["stress"].split()]
            if len(stress) != 9:
                raise ValueError("stress must have 9 components")
            vir = virial_from_stress_bar(stress, volume(info))
            lat = [x for row in lattice(info) for x in row]
            f.write("%d\n" % len(fr["atoms"]))
            f.write('Lattice="%s" Properties=%s energy=%s virial="%s" config_type=%s pbc="T T T"\n'
                    % (fmt(lat), PROPERTIES, repr(float(info["energy"])), fmt(vir), info["config_type"]))
            for sp, pos, frc in fr["atoms"]:
                f.write("%s %s %s\n" % (sp, fmt(pos), fmt(frc)))


def split(frames):
    by_type = OrderedDict()
    for fr in frames:
        by_type.setdefault(fr["info"]["config_type"], []).append(fr)
    train, test = [], []
    for ct, group in by_type.items():
        for k, fr in enumerate(group):
            if len(group) >= 5 and k % 5 == 2:
                test.append(fr)
            else:
                train.append(fr)
    # keep original file order within each output file
    order = {id(fr): n for n, fr in enumerate(frames)}
    train.sort(key=lambda fr: order[id(fr)])
    test.sort(key=lambda fr: order[id(fr)])
    return by_type, train, test


def count(frames):
    c = OrderedDict()
    for fr in frames:
        ct = fr["info"]["config_type"]
        n, a = c.get(ct, (0, 0))
        c[ct] = (n + 1, a + len(fr["atoms"]))
    return c


def sign_check(frames):
    """Check the virial sign on the Volume_* groups (prints numbers; returns True if consistent)."""
    ok = True
    for ct in sorted({fr["info"]["config_type"] for fr in frames}):
        if not ct.startswith("Volume_"):
            continue
        rows = []
        for fr in frames:
            if fr["info"]["config_type"] != ct:
                continue
            nat = len(fr["atoms"])
            vol = volume(fr["info"])
            s = [float(x) for x in fr["info"]["stress"].split()]
            p_bar = (s[0] + s[4] + s[8]) / 3.0
            w = virial_from_stress_bar(s, vol)
            rows.append((vol / nat, float(fr["info"]["energy"]) / nat, p_bar, (w[0] + w[4] + w[8]) / 3.0 / nat, nat))
        rows.sort()
        print("%s: %d configs" % (ct, len(rows)))
        print("  %10s %12s %12s %14s %14s" % ("V/atom", "E/atom", "P_bar", "W/3/atom eV", "-V dE/dV/atom"))
        for i, (va, ea, p, wa, nat) in enumerate(rows):
            if 0 < i < len(rows) - 1:
                dedv = (rows[i + 1][1] - rows[i - 1][1]) / (rows[i + 1][0] - rows[i - 1][0])
                num = "%14.5f" % (-va * dedv)
            else:
                num = "%14s" % "-"
            print("  %10.4f %12.5f %12.1f %14.5f %s" % (va, ea, p, wa, num))
        # physical sign: the smallest volume must be compressed (P > 0), the largest stretched (P < 0)
        if not (rows[0][2] > 0 and rows[-1][2] < 0):
            ok = False
            print("  SIGN CHECK FAILED for", ct)
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", help=f"source Ta_train.xyz (default: fetch.py's {TA_SOURCE})")
    ap.add_argument("--outdir", default=HERE, help="output directory (default: this script's directory)")
    ap.add_argument("--check", action="store_true", help="print the virial sign check on Volume_* groups")
    args = ap.parse_args(argv)
    if args.source is None:
        sys.path.insert(0, HERE)
        from fetch import fetch
        args.source = fetch(TA_SOURCE)

    frames = read_frames(args.source)
    by_type, train, test = split(frames)
    if args.check and not sign_check(frames):
        sys.exit("virial sign check failed")
    write_frames(os.path.join(args.outdir, "Ta_train.xyz"), train)
    write_frames(os.path.join(args.outdir, "Ta_test.xyz"), test)
    ctr, cte = count(train), count(test)
    print("%-14s %12s %12s" % ("config_type", "train c/at", "test c/at"))
    for ct in by_type:
        a, b = ctr.get(ct, (0, 0)), cte.get(ct, (0, 0))
        print("%-14s %5d/%-6d %5d/%-6d" % (ct, a[0], a[1], b[0], b[1]))
    print("%-14s %5d/%-6d %5d/%-6d" % ("total", len(train), sum(len(f["atoms"]) for f in train),
                                          len(test), sum(len(f["atoms"]) for f in test)))


if __name__ == "__main__":
    main()
