# shellcheck shell=bash
# Shared body of examples/<name>/run.sh: split, fit, evaluate, print a one-line summary.
# Source it from run.sh after setting:
#   EXAMPLE      name printed in the summary (e.g. zuo2020-Si)
#   SOURCE       training file, a name of examples/fetch.py (e.g. zuo2020_mlip_benchmark/Si_train.xyz)
#   SPLIT_ARGS   extra options of examples/split.py (array; may be empty)
#   PUB_E PUB_F  published MAE (energy, force) in the units below, or nan; PUB_NOTE: which model and
#                where from (the published GAP where there is one)
#   E_UNIT       meV/atom, or meV/molecule (per-atom MAE times the atoms per molecule)
#   F_UNIT       eV/A or meV/A
# then call: run_example "$@"   (the optional argument is DATA_DIR, a folder holding SOURCE; by
# default examples/fetch.py provides it from the repository). NPROC (default 2) sets the MPI ranks.

run_example() {
    set -euo pipefail
    local here root train_file start fit_wall total_start
    here="$(cd -- "$(dirname -- "${BASH_SOURCE[1]}")" && pwd -P)"
    root="$(cd -- "$here/../.." && pwd -P)"
    if [ $# -ge 1 ]; then
        DATA_DIR="$(cd -- "$1" && pwd -P)"
        export DATA_DIR
    fi
    local nproc="${NPROC:-2}"
    total_start=$SECONDS

    "$root/bin/setup" >/dev/null
    export PARGAP_ROOT="$root"
    # shellcheck source=../bin/env.sh
    source "$root/bin/env.sh"

    train_file="$(python "$root/examples/fetch.py" "$SOURCE")"
    python "$root/examples/split.py" "$train_file" "$here" "${SPLIT_ARGS[@]}"
    cd "$here"
    rm -f potential.h5
    echo "[example] $EXAMPLE: mpirun -n $nproc pargap-fit fit.toml   (log: $here/fit.log)"
    start=$SECONDS
    mpirun -n "$nproc" pargap-fit fit.toml 2>&1 | tee fit.log
    fit_wall=$((SECONDS - start))
    pargap-eval potential.h5 validation.xyz | tee eval.log
    pargap-eval potential.h5 validation.xyz --json >eval.json
    python - "$EXAMPLE" "$E_UNIT" "$F_UNIT" "$PUB_E" "$PUB_F" "$PUB_NOTE" "$fit_wall" "$nproc" \
        "$((SECONDS - total_start))" <<'EOF'
import json, sys
name, e_unit, f_unit, pub_e, pub_f, note, wall, nproc, total = sys.argv[1:]
import ase.io
table = json.load(open("eval.json"))["all"]
n_train = sum(1 for _ in ase.io.iread("train.xyz", format="extxyz"))
val = ase.io.read("validation.xyz", ":", format="extxyz")
e = 1000 * table["energy"]["mae"] * (len(val[0]) if e_unit == "meV/molecule" else 1)
f = table["forces"]["mae"] * (1000 if f_unit == "meV/A" else 1)
summary = {"example": name, "n_train": n_train, "n_validation": len(val), "energy_mae": e, "energy_unit": e_unit,
           "force_mae": f, "force_unit": f_unit, "published": None if pub_e == "nan" else [float(pub_e), float(pub_f)],
           "published_note": note, "fit_wall_s": int(wall), "total_wall_s": int(total), "cores": int(nproc)}
json.dump(summary, open("summary.json", "w"), indent=1)
published = (f"published: {note}" if pub_e == "nan" else f"published {pub_e} {e_unit}, {pub_f} {f_unit} ({note})")
print(f"[example] {name}: validation MAE E {e:.3g} {e_unit}, F {f:.3g} {f_unit} "
      f"(train {n_train}, validation {len(val)}) | {published} | fit {wall} s, total {total} s, {nproc} MPI ranks")
EOF
}
