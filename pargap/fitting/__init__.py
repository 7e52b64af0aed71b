"""The fit (MPI): the pipeline's phases, sparse selection, checkpoints, hyperparameters, the memory plan."""
