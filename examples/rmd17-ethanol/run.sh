#!/usr/bin/env bash
# rMD17 ethanol GAP: fit on the training part, validate on the held-out part.
# Usage: run.sh [DATA_DIR]   (from any directory; without DATA_DIR examples/fetch.py gives the
# data; NPROC=4 run.sh for 4 MPI ranks). Writes train.xyz, validation.xyz, potential.h5,
# fit.log, eval.log, eval.json and summary.json into this folder.
set -euo pipefail
EXAMPLE=rmd17-ethanol
SOURCE=rmd17/rmd17_ethanol_train_01.extxyz
SPLIT_ARGS=()
PUB_E=3.5 PUB_F=18.1 PUB_NOTE="SOAP-GAP, Kovacs et al. 2021, rMD17 test, 1000 train"
E_UNIT=meV/molecule F_UNIT=meV/A
source "$(dirname -- "${BASH_SOURCE[0]}")/../_run_example.sh"
run_example "$@"
