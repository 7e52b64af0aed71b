#!/usr/bin/env bash
# The talk's silicon Hessian experiment, end to end (about 10 s on one core):
#   make the data from Stillinger-Weber, fit the 2-body + 3-body GAP to the 8-atom minimum's energy
#   and 21 Hessian eigenvalues, fit the same GAP to 21 independent force components instead, and
#   print both fits' force errors on a 216-atom cell with randomised positions.
#
#   examples/si_hessian/run.sh [OUT_DIR] [make_data.py options, e.g. --amplitude 0.05]
#
# OUT_DIR defaults to a new temporary folder. Set MPIRUN="mpirun -n 2" to fit on 2 ranks.
set -euo pipefail
HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
export PARGAP_ROOT="${PARGAP_ROOT:-$(cd -- "$HERE/../.." && pwd -P)}"
# shellcheck source=../../bin/env.sh
source "$PARGAP_ROOT/bin/env.sh"
OUT="${1:-$(mktemp -d -t si_hessian.XXXXXX)}"
shift || true
mkdir -p "$OUT"
cd "$OUT"
start=$SECONDS

python "$HERE/make_data.py" . "$@"
for name in hessian forces; do
    echo "[si_hessian] ${MPIRUN:-} pargap-fit $HERE/fit_$name.toml"
    ${MPIRUN:-} pargap-fit -q "$HERE/fit_$name.toml"
done
python "$HERE/report.py" .
echo "[si_hessian] done in $((SECONDS - start)) s; files in $OUT"
