#!/usr/bin/env bash
# Tungsten (Szlachta et al. 2014, GAP_2 database) GAP: fit on the training part, validate on the held-out part.
# Usage: run.sh [DATA_DIR]   (from any directory; without DATA_DIR examples/fetch.py gives the
# data; NPROC=4 run.sh for 4 MPI ranks). Writes train.xyz, validation.xyz, potential.h5,
# fit.log, eval.log, eval.json and summary.json into this folder.
set -euo pipefail
EXAMPLE=w
SOURCE=w_gap_szlachta2014_partial/GAP_2.xyz
SPLIT_ARGS=()
PUB_E=nan PUB_F=nan PUB_NOTE="no published error for the GAP_2 database"
E_UNIT=meV/atom F_UNIT=eV/A
source "$(dirname -- "${BASH_SOURCE[0]}")/../_run_example.sh"
run_example "$@"
