#!/bin/bash
# Slurm template for a large pargap fit.
#   Size it first (login node, one process, no fit):  jobscripts/submit-slurm.sh config.toml 256
#   or by hand:  pargap-fit config.toml --dry-run --ranks 256   (last line: memory to ask per rank)
#   then:        sbatch --ntasks=256 --mem-per-cpu=<that> jobscripts/slurm.sh config.toml [--set ...]
#   (arguments after the config go to pargap-fit: submit-slurm.sh pins the planned solver and row block)
# Edit the #SBATCH lines and the variables below for your site.
#SBATCH --job-name=pargap-fit
#SBATCH --ntasks=256                 # MPI ranks (e.g. 4 nodes x 64); one core each
#SBATCH --cpus-per-task=1            # one thread per rank: parallelism comes from MPI
#SBATCH --mem-per-cpu=2G             # memory PER RANK: from `pargap-fit CONFIG --dry-run --ranks P`
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@600            # SIGTERM to the ranks 10 min before the time limit: they save a
#                                    # checkpoint at the next safe point and exit 75
#SBATCH --requeue                    # a requeued job goes on from the checkpoint
#SBATCH --open-mode=append           # keep the log of every run of a requeued job
#SBATCH --output=%x-%j.out
set -uo pipefail

PARGAP_HOME=/path/to/pargap          # repository checkout containing .venv (from bin/setup)
CONFIG="${1:-config.toml}"
GP_FILE="gap.h5"
CHECKPOINT="checkpoint"              # models + rows (parallel HDF5), written before the solve and on SIGTERM
MAX_RUNS=5                           # give up after this many requeues
EXIT_STOPPED=75                      # pargap-fit: stopped by SIGTERM after writing the checkpoint

# module load ...                    # site MPI/HDF5 modules, if pargap was pip-installed against them
source "$PARGAP_HOME/.venv/bin/activate"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export H5PY_ALWAYS_USE_MPI=1         # Debian h5py: always load the MPI build (ignored elsewhere)

# First run: build and fold the rows, saving the factor; after a stop or requeue: fold the missing rows, solve.
if [[ -f "$CHECKPOINT/factor.h5" || -f "$CHECKPOINT/rows.h5" ]]; then
    FROM=(--restart "$CHECKPOINT")
else
    FROM=(--checkpoint "$CHECKPOINT")
fi
# srun delivers --signal's SIGTERM to every rank. It needs an MPI built with Slurm/PMIx support
# (maybe `srun --mpi=pmix`). With mpirun instead, SIGTERM does not reach the ranks safely (mpirun
# kills them a second after its own): then add --stop-after <seconds before the limit minus 10 min>.
srun pargap-fit "$CONFIG" "${@:2}" "${FROM[@]}" --set "gp_file=$GP_FILE"
rc=$?
if [[ $rc -eq $EXIT_STOPPED && ${SLURM_RESTART_COUNT:-0} -lt $MAX_RUNS ]]; then
    echo "pargap-fit stopped at the time limit with a checkpoint in $CHECKPOINT: requeueing"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $rc
