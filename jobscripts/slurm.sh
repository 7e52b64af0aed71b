#!/bin/bash
# Slurm template for a large pargap fit.  Submit with: sbatch jobscripts/slurm.sh
# Edit the #SBATCH lines and the variables below for your site.
#SBATCH --job-name=pargap-fit
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=64         # MPI ranks per node (total ranks = nodes * this)
#SBATCH --cpus-per-task=1            # one core per rank, no threading
#SBATCH --mem-per-cpu=4G             # memory PER RANK: take it from `pargap-fit CONFIG --dry-run`
#                                    # (--dry-run is planned, not yet implemented; estimate meanwhile)
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --requeue                    # a requeued job restarts from the checkpoint below
set -euo pipefail

PARGAP_HOME=/path/to/pargap          # repository checkout containing .venv (from bin/setup)
CONFIG=config.toml
GP_FILE="gap.h5"
CHECKPOINT="checkpoint"              # rows of the fit, saved before the solve (parallel HDF5)
NRANKS="${SLURM_NTASKS}"

# module load ...                    # site MPI/HDF5 modules, if pargap was pip-installed against them
source "$PARGAP_HOME/.venv/bin/activate"

export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export H5PY_ALWAYS_USE_MPI=1         # Debian h5py: always load the MPI build (ignored elsewhere)

# srun needs an MPI built with Slurm/PMIx support (maybe `srun --mpi=pmix`);
# otherwise use: mpirun -n "$NRANKS" pargap-fit ...
# First run: build the rows and save them; after a requeue: solve from the saved rows.
if [[ -f "$CHECKPOINT/rows.h5" ]]; then
    srun -n "$NRANKS" pargap-fit "$CONFIG" --restart "$CHECKPOINT" --set "gp_file=$GP_FILE"
else
    srun -n "$NRANKS" pargap-fit "$CONFIG" --checkpoint "$CHECKPOINT" --set "gp_file=$GP_FILE"
fi
