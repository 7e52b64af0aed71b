#!/bin/bash
# PBS Pro template for a large pargap fit.  Submit with: qsub jobscripts/pbs.sh
# Size it first (login node, one process, no fit):
#   pargap-fit config.toml --dry-run --ranks 256
# and put its per-rank request (last line) x 64 ranks per node into mem= below
# (Torque: -l nodes=4:ppn=64,pmem=<per-rank request>).
# Edit the #PBS lines and the variables below for your site.
#PBS -N pargap-fit
#PBS -l select=4:ncpus=64:mpiprocs=64:ompthreads=1:mem=128gb
#PBS -l walltime=24:00:00
#PBS -j oe
#PBS -r y                               # rerunnable: a rerun goes on from the checkpoint
set -uo pipefail
cd "${PBS_O_WORKDIR:-.}"

PARGAP_HOME=/path/to/pargap          # repository checkout containing .venv (from bin/setup)
CONFIG=config.toml
GP_FILE="gap.h5"
CHECKPOINT="checkpoint"              # models + rows (parallel HDF5), written before the solve and on a stop
WALLTIME_S=$((24 * 3600))            # keep equal to walltime above
MARGIN_S=900                         # stop this long before it: time to write the checkpoint
EXIT_STOPPED=75                      # pargap-fit: stopped (time up or SIGTERM) after writing the checkpoint
JOBSCRIPT="$PBS_O_WORKDIR/pbs.sh"    # this file, resubmitted after a stop (copy it beside the config)
NRANKS="$(wc -l <"$PBS_NODEFILE")"   # one line per MPI rank (mpiprocs)

# module load ...                    # site MPI/HDF5 modules, if pargap was pip-installed against them
source "$PARGAP_HOME/.venv/bin/activate"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export H5PY_ALWAYS_USE_MPI=1         # Debian h5py: always load the MPI build (ignored elsewhere)

if [[ -f "$CHECKPOINT/factor.h5" || -f "$CHECKPOINT/rows.h5" ]]; then
    FROM=(--restart "$CHECKPOINT")
else
    FROM=(--checkpoint "$CHECKPOINT")
fi
# PBS's SIGTERM at the wall time also reaches mpirun, which kills the ranks a second later, so the
# ranks stop themselves before it (--stop-after): checkpoint, exit 75.
mpirun -n "$NRANKS" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS pargap-fit "$CONFIG" "${FROM[@]}" \
    --stop-after $((WALLTIME_S - MARGIN_S)) --set "gp_file=$GP_FILE"
rc=$?
if [[ $rc -eq $EXIT_STOPPED ]]; then
    echo "pargap-fit stopped before the wall time with a checkpoint in $CHECKPOINT: resubmitting"
    qsub "$JOBSCRIPT"                # or: qrerun "$PBS_JOBID" where users may rerun their jobs
fi
exit $rc
