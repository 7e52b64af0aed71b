"""Deterministic train/validation split of an extended-XYZ file, for the example fits.

    python examples/split.py SOURCE.xyz OUT_DIR [--every 10] [--offset 9] [--stress-bar-to-virial]

Within each config type (the ``config_type=`` key of the comment line; structures without one form
a single group), in file order, the structure with 0-based group index ``k`` goes to
``OUT_DIR/validation.xyz`` when ``k % every == offset`` and to ``OUT_DIR/train.xyz`` otherwise. A
group with fewer than ``every`` structures goes entirely to train. Frames are copied verbatim
(same keys, same digits), so the split is reproducible bit for bit and the two files are disjoint.

``--stress-bar-to-virial``: the source's ``stress`` is a pressure tensor in bar with the
LAMMPS/VASP sign (compressive positive), as in the FitSNAP Ta set. It is replaced by a GAP virial
in eV, W = P_bar * 1e-4 * V / 160.21766208 (1 bar = 1e-4 GPa, 1 eV/A^3 = 160.21766208 GPa,
V = |det(Lattice)| in A^3), because pargap would read ``stress`` as ASE's eV/A^3, tensile positive.
Standard library only.
"""

import argparse
import re
import sys
from pathlib import Path

EV_PER_A3_IN_GPA = 160.21766208
GPA_PER_BAR = 1e-4
_CONFIG_TYPE = re.compile(r"(?:^|\s)config_type=(\"[^\"]*\"|\S+)", re.IGNORECASE)
_STRESS = re.compile(r"(?:^|(?<=\s))stress=\"([^\"]*)\"", re.IGNORECASE)
_LATTICE = re.compile(r"(?:^|(?<=\s))Lattice=\"([^\"]*)\"", re.IGNORECASE)


def frames(path):
    """The frames of an extended-XYZ file as lists of lines (count line, comment, atoms)."""
    with open(path) as fh:
        lines = fh.readlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            raise SystemExit(f"{path}: line {i + 1}: expected an atom count, got {lines[i].strip()!r}")
        if i + 2 + n > len(lines):
            raise SystemExit(f"{path}: frame at line {i + 1} is truncated")
        yield lines[i:i + 2 + n]
        i += 2 + n


def config_type(frame):
    m = _CONFIG_TYPE.search(frame[1])
    return m.group(1).strip('"') if m else None


def split_indices(groups, every=10, offset=None):
    """Validation flags for a sequence of group labels: the ``k % every == offset`` rule per group.

    groups: one label per structure (None is a label too). Returns a list of bools (True:
    validation). ``offset`` defaults to ``every - 1``."""
    if every < 2:
        raise ValueError(f"every must be at least 2, got {every}")
    offset = every - 1 if offset is None else offset
    if not 0 <= offset < every:
        raise ValueError(f"offset must be in [0, {every}), got {offset}")
    sizes, seen, flags = {}, {}, []
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    for g in groups:
        k = seen.get(g, 0)
        seen[g] = k + 1
        flags.append(sizes[g] >= every and k % every == offset)
    return flags


def stress_bar_to_virial(comment):
    """The comment line with ``stress`` (bar, compressive positive) replaced by ``virial`` (eV)."""
    m, lat = _STRESS.search(comment), _LATTICE.search(comment)
    if not m:
        return comment
    if not lat:
        raise SystemExit(f"stress without a Lattice in {comment.strip()[:80]!r}")
    p = [float(x) for x in m.group(1).split()]
    a = [float(x) for x in lat.group(1).split()]
    if len(p) != 9 or len(a) != 9:
        raise SystemExit(f"expected 9 stress and 9 lattice numbers in {comment.strip()[:80]!r}")
    volume = abs(a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6])
                 + a[2] * (a[3] * a[7] - a[4] * a[6]))
    w = [x * GPA_PER_BAR * volume / EV_PER_A3_IN_GPA for x in p]
    return comment[:m.start()] + 'virial="' + " ".join(repr(x) for x in w) + '"' + comment[m.end():]


def split_file(source, out_dir, every=10, offset=None, stress_bar=False):
    """Write OUT_DIR/train.xyz and OUT_DIR/validation.xyz; return (n_train, n_validation)."""
    all_frames = list(frames(source))
    flags = split_indices([config_type(f) for f in all_frames], every, offset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {False: 0, True: 0}
    with open(out_dir / "train.xyz", "w") as tr, open(out_dir / "validation.xyz", "w") as va:
        for frame, is_val in zip(all_frames, flags):
            if stress_bar:
                frame = [frame[0], stress_bar_to_virial(frame[1])] + frame[2:]
            (va if is_val else tr).writelines(frame)
            counts[is_val] += 1
    return counts[False], counts[True]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source")
    p.add_argument("out_dir")
    p.add_argument("--every", type=int, default=10, help="one structure in EVERY per group is held out")
    p.add_argument("--offset", type=int, default=None, help="which one (default EVERY-1)")
    p.add_argument("--stress-bar-to-virial", action="store_true")
    args = p.parse_args(argv)
    n_train, n_val = split_file(args.source, args.out_dir, args.every, args.offset, args.stress_bar_to_virial)
    print(f"[split] {args.source}: {n_train} train, {n_val} validation -> {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
