#!/usr/bin/env bash
# Zuo et al. (2020) copper GAP: fit on the training part, validate on the held-out part.
# Usage: run.sh [DATA_DIR]   (from any directory; without DATA_DIR examples/fetch.py gives the
# data; NPROC=4 run.sh for 4 MPI ranks). Writes train.xyz, validation.xyz, potential.h5,
# fit.log, eval.log, eval.json and summary.json into this folder.
set -euo pipefail
EXAMPLE=zuo2020-Cu
SOURCE=zuo2020_mlip_benchmark/Cu_train.xyz
SPLIT_ARGS=()
PUB_E=0.46 PUB_F=0.01 PUB_NOTE="Zuo et al. 2020 GAP, official test set"
E_UNIT=meV/atom F_UNIT=eV/A
source "$(dirname -- "${BASH_SOURCE[0]}")/../_run_example.sh"
run_example "$@"
