"""Reference fits by QUIP's own gap_fit, for descriptors QUIP's regression data does not cover.

    bench/setup && bench/.venv/bin/python tests/data/make_gapfit_references.py

Runs gap_fit (wheel quippy-ase, installed in bench/.venv by bench/setup) on
tests/data/quip_gapfit_regression/SiC.np1.xyz (two species, so every species-triplet
expansion of angle_3b occurs) and writes ``angle_3b_SiC.json`` beside this file:
the command line, and per coordinate (in gap_fit's order) its sparse points, cutoff weights and
alpha, read from gap_fit's XML and sparseX files. The test then fits the same data with the same
sparse points (sparse_method=file) and compares the coefficients.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "quip_gapfit_regression" / "SiC.np1.xyz"
GAP_FIT = next(Path(sys.prefix).glob("lib/python3*/site-packages/quippy/gap_fit"))
LINE = ("at_file=train.xyz gap={angle_3b cutoff=3.0 cutoff_transition_width=0.8 covariance_type=ard_se "
        "delta=0.5 theta_uniform=1.0 n_sparse=12 sparse_method=random} default_sigma={0.01 0.3 0.2 0.0} "
        "energy_parameter_name=dft_energy force_parameter_name=dft_force virial_parameter_name=dft_virial "
        "e0_offset=1.0 sparse_jitter=1.0e-3 rnd_seed=3 gp_file=gp.xml")


def main():
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


if __name__ == "__main__":
    main()
