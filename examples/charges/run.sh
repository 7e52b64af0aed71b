#!/usr/bin/env bash
# The charge-model example: fit ESP charges of methanol, ethanol and acetone (HF/6-31G*), and
# a second model on methanol + acetone only (transferability to ethanol); print the table.
#
#   ./run.sh            # serial; NP=2 ./run.sh runs the fits under mpirun -n 2
#
# Needs the project venv (bin/setup); the shipped data/*.xyz were made by make_data.py with the
# pyscf venv of setup.sh (regenerate: ./setup.sh && .venv/bin/python make_data.py).
set -euo pipefail
HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$HERE/../.." && pwd -P)"
export PARGAP_ROOT="$ROOT"
source "$ROOT/bin/env.sh"
cd "$HERE"
mkdir -p out
cat data/methanol.xyz data/ethanol.xyz data/acetone.xyz > out/all.xyz
cat data/methanol.xyz data/acetone.xyz > out/methanol_acetone.xyz
LAUNCH=()
if [[ "${NP:-1}" -gt 1 ]]; then LAUNCH=(mpirun -n "$NP"); fi
"${LAUNCH[@]}" pargap-fit charges_all.toml
"${LAUNCH[@]}" pargap-fit charges_transfer.toml
python analyse.py out/charges_all.h5 out/charges_methanol_acetone.h5 --markdown out/table.md
