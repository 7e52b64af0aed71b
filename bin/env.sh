# shellcheck shell=bash
# Runtime environment shared by bin/test and bin/quickstart.
# Source it (do not execute); expects PARGAP_ROOT to be the repository root.
: "${PARGAP_ROOT:?PARGAP_ROOT must be set before sourcing bin/env.sh}"

# Open MPI 4.1: allow running as root (containers/CI) and more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

# One thread per MPI rank; parallelism comes from MPI.
export OMP_NUM_THREADS=1
export OPENBLAS_NUM_THREADS=1

# Debian's h5py loads its MPI build by itself when it detects an mpirun launch
# (OMPI_COMM_WORLD_SIZE); serial processes (pytest, one-rank runs) get the serial build
# and never start MPI.

export PATH="$PARGAP_ROOT/.venv/bin:$PATH"
