#!/usr/bin/env bash
# Create examples/charges/.venv with pyscf, for the reference-data script make_data.py only.
#
# pyscf is installed with --no-deps: its h5py requirement would otherwise pull a PyPI h5py into
# the venv and hide Debian's MPI-enabled one. numpy, scipy and h5py come from the system
# (--system-site-packages). Idempotent. The fit itself (run.sh) uses the project venv, not this one.
set -euo pipefail
HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
VENV="$HERE/.venv"
if [[ ! -x "$VENV/bin/python" ]]; then
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import pyscf" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --no-deps "pyscf>=2.3"
fi
"$VENV/bin/python" -c "import pyscf, numpy, scipy, h5py, ase; print('pyscf', pyscf.__version__)"
