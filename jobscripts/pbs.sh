#!/bin/bash
# PBS Pro template for a large pargap fit.  Submit with: qsub jobscripts/pbs.sh
# Edit the #PBS lines and the variables below for your site.
#PBS -N pargap-fit
# 4 nodes x 64 MPI ranks, one core per rank.  mem is PER NODE here:
# 64 ranks x memory per rank -- take the per-rank value from
# `pargap-fit CONFIG --dry-run` (--dry-run is planned, not yet implemented; estimate meanwhile).
# (Torque: -l nodes=4:ppn=64,pmem=4gb, where pmem is per rank.)
#PBS -l select=4:ncpus=64:mpiprocs=64:ompthreads=1:mem=256gb
#PBS -l walltime=24:00:00
#PBS -j oe
#PBS -r y                               # rerunnable: a rerun restarts from the checkpoint
set -euo pipefail
cd "$PBS_O_WORKDIR"

PARGAP_HOME=/path/to/pargap          # repository checkout containing .venv (from bin/setup)
CONFIG=config.toml
GP_FILE="gap.h5"
CHECKPOINT="checkpoint"              # rows of the fit, saved before the solve (parallel HDF5)
NRANKS="$(wc -l <"$PBS_NODEFILE")"   # one line per MPI rank (mpiprocs)

# module load ...                    # site MPI/HDF5 modules, if pargap was pip-installed against them
source "$PARGAP_HOME/.venv/bin/activate"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export H5PY_ALWAYS_USE_MPI=1         # Debian h5py: always load the MPI build (ignored elsewhere)

cd "${PBS_O_WORKDIR:-.}"
# First run: build the rows and save them; a rerun (qrerun, -r y) solves from the saved rows.
if [[ -f "$CHECKPOINT/rows.h5" ]]; then
    mpirun -n "$NRANKS" pargap-fit "$CONFIG" --restart "$CHECKPOINT" --set "gp_file=$GP_FILE"
else
    mpirun -n "$NRANKS" pargap-fit "$CONFIG" --checkpoint "$CHECKPOINT" --set "gp_file=$GP_FILE"
fi
