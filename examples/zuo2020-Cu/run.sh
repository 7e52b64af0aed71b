#!/usr/bin/env bash
# Zuo et al. (2020) copper GAP: fit on the whole training file (hyperparameters by 5-fold CV).
# Usage: run.sh [DATA_DIR]   (from any directory; without DATA_DIR examples/fetch.py gives the
# data; NPROC=4 run.sh for 4 MPI ranks). Writes train.xyz, validation.xyz, potential.h5,
# fit.log, eval.log, eval.json and summary.json into this folder.
set -euo pipefail
EXAMPLE=zuo2020-Cu
SOURCE=zuo2020_mlip_benchmark/Cu_train.xyz
SPLIT_ARGS=()
WHOLE_FILE=1  # no split: fit the whole training file (hyperparameters by 5-fold CV, README.md)
PUB_E=0.46 PUB_F=0.01 PUB_NOTE="Zuo et al. 2020 GAP, official test set"
E_UNIT=meV/atom F_UNIT=eV/A
source "$(dirname -- "${BASH_SOURCE[0]}")/../_run_example.sh"
run_example "$@"
