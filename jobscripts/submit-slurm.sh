#!/bin/bash
# Size a pargap fit with --dry-run and submit jobscripts/slurm.sh with that memory per rank.
#   jobscripts/submit-slurm.sh CONFIG.toml RANKS [extra sbatch options]
# Runs `pargap-fit CONFIG --dry-run --ranks RANKS` here (one process, no MPI, no fit; it reads the
# data's index and measures a sample of structures), prints its per-rank table, and passes its
# suggested request (estimated peak + 20%) as --mem-per-cpu (one core per rank), with the solver and
# row block it planned for pinned (--set), so that the job runs the plan whatever its nodes' memory.
set -euo pipefail
CONFIG="$1"; RANKS="$2"; shift 2
HERE="$(cd "$(dirname "$0")" && pwd)"
plan="$(pargap-fit "$CONFIG" --dry-run --ranks "$RANKS")"
echo "$plan"
mem="$(sed -n 's/.*ask the batch system for about \([0-9]*M\) per rank.*/\1/p' <<<"$plan")"
pinned="$(sed -n 's/.*per rank (with \(--set solver=[a-z]* --set row_block_mb=[0-9.e+-]*\), as planned).*/\1/p' <<<"$plan")"
[[ -n "$mem" && -n "$pinned" ]] || { echo "no memory estimate in the dry run's output" >&2; exit 1; }
# shellcheck disable=SC2086 # $pinned is two --set options
exec sbatch --ntasks="$RANKS" --mem-per-cpu="$mem" "$@" "$HERE/slurm.sh" "$CONFIG" $pinned
