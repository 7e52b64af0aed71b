"""Reference fits by QUIP's own gap_fit, for what QUIP's regression data does not cover.

    bench/setup && bench/.venv/bin/python tests/data/make_gapfit_references.py

Runs gap_fit (wheel quippy-ase, installed in bench/.venv by bench/setup) on
tests/data/quip_gapfit_regression/SiC.np1.xyz (two species, so every species-triplet
expansion of angle_3b occurs) and writes ``angle_3b_SiC.json`` beside this file:
the command line, and per coordinate (in gap_fit's order) its sparse points, cutoff weights and
alpha, read from gap_fit's XML and sparseX files. The test then fits the same data with the same
sparse points (sparse_method=file) and compares the coefficients.

For gap_fit's options (issue 17) it also writes:

* ``local_property_Si.xyz``: six rattled Si cells with a synthetic per-atom ``local_property``
  (:func:`local_property_structures`), and gap_fit's local-property fit of it: first gap_fit's
  own ``sparsify_only_no_fit=T`` + ``print_sparse_index`` (its one-line index file is kept as
  ``local_property_index.gapfit``), then the fit with ``sparse_method=index_file``
  (``local_property_Si.json``: both command lines, the indices, e0 and the coordinate);
* ``SiC_subset.xyz`` (frames of SiC.np1.xyz, copied verbatim) and ``angle_3b_theta_fac_SiC.json``,
  an angle_3b fit with ``theta_fac={0.5:0.4:0.3}`` (per coordinate its theta as well).
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "quip_gapfit_regression" / "SiC.np1.xyz"
SOURCE_SIC = SOURCE
GAP_FIT = next(Path(sys.prefix).glob("lib/python3*/site-packages/quippy/gap_fit"))
LINE = ("at_file=train.xyz gap={angle_3b cutoff=3.0 cutoff_transition_width=0.8 covariance_type=ard_se "
        "delta=0.5 theta_uniform=1.0 n_sparse=12 sparse_method=random} default_sigma={0.01 0.3 0.2 0.0} "
        "energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial "
        "e0_offset=1.0 sparse_jitter=1.0e-3 rnd_seed=3 gp_file=gp.xml")


LOCAL_PROPERTY_XYZ = "local_property_Si.xyz"
LOCAL_PROPERTY_SPARSIFY = (
    "at_file=train.xyz gap={soap cutoff=4.0 cutoff_transition_width=0.5 l_max=3 n_max=4 atom_sigma=0.5 "
    "covariance_type=dot_product zeta=4 delta=0.5 n_sparse=16 sparse_method=random "
    "print_sparse_index=index.gapfit} default_sigma={0.01 0.1 0.1 0.0} e0_method=average "
    "local_property0={Si:4.0} default_local_property_sigma=0.01 sparse_jitter=1.0e-6 rnd_seed=7 "
    "sparsify_only_no_fit=T gp_file=gp.xml")
LOCAL_PROPERTY_FIT = (
    "at_file=train.xyz gap={soap cutoff=4.0 cutoff_transition_width=0.5 l_max=3 n_max=4 atom_sigma=0.5 "
    "covariance_type=dot_product zeta=4 delta=0.5 sparse_method=index_file sparse_file=index.txt} "
    "default_sigma={0.01 0.1 0.1 0.0} e0_method=average local_property0={Si:4.0} "
    "default_local_property_sigma=0.01 sparse_jitter=1.0e-6 gp_file=gp.xml")
THETA_FAC_LINE = (
    "at_file=train.xyz gap={angle_3b cutoff=3.0 cutoff_transition_width=0.8 covariance_type=ard_se "
    "delta=0.5 theta_fac={0.5:0.4:0.3} n_sparse=12 sparse_method=random} default_sigma={0.01 0.3 0.2 0.0} "
    "energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial "
    "e0_offset=1.0 sparse_jitter=1.0e-3 rnd_seed=5 gp_file=gp.xml")


def local_property_structures():
    """Six rattled 8-atom diamond Si cells; per atom a smooth coordination number,
    local_property_i = sum_j f_c(r_ij) exp(-(r_ij - 2.35)^2) (f_c: cosine cutoff 3.5-4.0 A), a
    synthetic but smooth function of the environment. Frame 2 masks atoms 0 and 1 out."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(17)
    frames = []
    for k in range(6):
        atoms = bulk("Si", "diamond", a=5.43 * rng.uniform(0.96, 1.04), cubic=True)
        atoms.rattle(0.12, seed=int(rng.integers(1 << 30)))
        i, d = neighbor_list("id", atoms, 4.0)
        fc = np.where(d < 3.5, 1.0, 0.5 * (np.cos(np.pi * (d - 3.5) / 0.5) + 1.0))
        value = np.bincount(i, weights=fc * np.exp(-(d - 2.35) ** 2), minlength=len(atoms))
        atoms.new_array("local_property", value)
        if k == 2:
            atoms.new_array("local_property_mask", np.array([False, False] + [True] * (len(atoms) - 2)))
        atoms.info["config_type"] = "bulk"
        frames.append(atoms)
    return frames


def gapfit(line, cwd):
    out = subprocess.run([str(GAP_FIT), *line.split()], cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"gap_fit failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def read_coordinates(tmp):
    xml = (tmp / "gp.xml").read_text()
    coords = []
    for block in re.findall(r"<gpCoordinates (.*?)</gpCoordinates>", xml, flags=re.S):
        dims = int(re.search(r'dimensions="(\d+)"', block).group(1))
        name = re.search(r'sparseX_filename="([^"]+)"', block).group(1)
        alpha = [float(a) for a in re.findall(r'<sparseX i="\d+" alpha="([^"]+)"', block)]
        cutoff = [float(c) for c in re.findall(r'sparseCutoff="([^"]+)"', block)]
        theta = re.search(r"<theta>(.*?)</theta>", block, flags=re.S)
        x = np.loadtxt(tmp / name).reshape(len(alpha), dims)
        descriptor = re.search(r"<descriptor>(.*?)</descriptor>", block, flags=re.S).group(1).strip()
        coords.append({"descriptor": descriptor, "alpha": alpha, "cutoff": cutoff, "sparsex": x.tolist()}
                      | ({"theta": [float(t) for t in theta.group(1).split()]} if theta else {}))
    e0 = {int(z): float(v) for z, v in re.findall(r'<e0 Z="(\d+)" value="([^"]+)"', xml) if float(v) != 0.0}
    return coords, e0


def local_property_reference():
    import ase.io

    ase.io.write(HERE / LOCAL_PROPERTY_XYZ, local_property_structures(), format="extxyz")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(HERE / LOCAL_PROPERTY_XYZ, tmp / "train.xyz")
        gapfit(LOCAL_PROPERTY_SPARSIFY, tmp)  # gap_fit's MPI workflow, step 1: sparsify only
        printed = (tmp / "index.gapfit").read_text()
        index = [int(i) for i in printed.split()]
        (tmp / "index.txt").write_text("".join(f"{i}\n" for i in index))  # gap_fit reads one per line
        gapfit(LOCAL_PROPERTY_FIT, tmp)
        coords, e0 = read_coordinates(tmp)
    (HERE / "local_property_index.gapfit").write_text(printed)
    (HERE / "local_property_Si.json").write_text(json.dumps(
        {"sparsify": LOCAL_PROPERTY_SPARSIFY, "config": LOCAL_PROPERTY_FIT, "index": index, "e0": e0,
         "coords": coords}, indent=1))
    print(f"local property: {len(index)} sparse points, printed as {len(printed.splitlines())} line(s)")


SIC_SUBSET = "SiC_subset.xyz"
SIC_FRAMES = (0, 1, 2, 3, 4, 5, 6, 7, 18, 19, 20, 21, 35, 39, 43, 47, 100)
"""Frames of SiC.np1.xyz copied verbatim: 8 crystal_3C cells, 4 one-atom crystalline Si cells, a C-C,
an Si-Si and an Si-C dimer, and the isolated Si and C atoms (for e0)."""


def sic_subset():
    """Write SIC_SUBSET: the frames SIC_FRAMES of SiC.np1.xyz, text copied unchanged."""
    lines = SOURCE_SIC.read_text().splitlines(keepends=True)
    frames, i = [], 0
    while i < len(lines):
        n = int(lines[i])
        frames.append(lines[i:i + n + 2])
        i += n + 2
    (HERE / SIC_SUBSET).write_text("".join("".join(frames[k]) for k in SIC_FRAMES))


def theta_fac_reference():
    sic_subset()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(HERE / SIC_SUBSET, tmp / "train.xyz")
        gapfit(THETA_FAC_LINE, tmp)
        coords, _ = read_coordinates(tmp)
    (HERE / "angle_3b_theta_fac_SiC.json").write_text(json.dumps({"config": THETA_FAC_LINE, "coords": coords},
                                                                   indent=1))
    print(f"theta_fac: {len(coords)} coordinates, theta {[c.get('theta') for c in coords]}")


def angle_3b_reference():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "train.xyz").symlink_to(SOURCE)
        subprocess.run([str(GAP_FIT), *LINE.split()], cwd=tmp, check=True, capture_output=True)
        xml = (tmp / "gp.xml").read_text()
        coords = []
        for block in re.findall(r"<gpCoordinates (.*?)</gpCoordinates>", xml, flags=re.S):
            dims = int(re.search(r'dimensions="(\d+)"', block).group(1))
            name = re.search(r'sparseX_filename="([^"]+)"', block).group(1)
            alpha = [float(a) for a in re.findall(r'<sparseX i="\d+" alpha="([^"]+)"', block)]
            cutoff = [float(c) for c in re.findall(r'sparseCutoff="([^"]+)"', block)]
            x = np.loadtxt(tmp / name).reshape(len(alpha), dims)
            descriptor = re.search(r"<descriptor>(.*?)</descriptor>", block, flags=re.S).group(1).strip()
            coords.append({"descriptor": descriptor, "alpha": alpha, "cutoff": cutoff, "sparsex": x.tolist()})
    (HERE / "angle_3b_SiC.json").write_text(json.dumps({"config": LINE, "coords": coords}, indent=1))
    print(f"wrote {HERE / 'angle_3b_SiC.json'}: {len(coords)} coordinates")


def main():
    angle_3b_reference()
    local_property_reference()
    theta_fac_reference()


if __name__ == "__main__":
    main()
