#!/usr/bin/env bash
# Tantalum (Thompson et al. 2015 SNAP training set) GAP: fit on the training part, validate on the held-out part.
# Usage: run.sh [DATA_DIR]   (from any directory; without DATA_DIR examples/fetch.py gives the
# data; NPROC=4 run.sh for 4 MPI ranks). Writes train.xyz, validation.xyz, potential.h5,
# fit.log, eval.log, eval.json and summary.json into this folder.
set -euo pipefail
EXAMPLE=ta
SOURCE=ta_snap_thompson2015/Ta_train.xyz
SPLIT_ARGS=(--stress-bar-to-virial)
PUB_E=112.8 PUB_F=0.0758 PUB_NOTE="FitSNAP linear SNAP, training error on all 363 configs; no published GAP"
E_UNIT=meV/atom F_UNIT=eV/A
source "$(dirname -- "${BASH_SOURCE[0]}")/../_run_example.sh"
run_example "$@"
