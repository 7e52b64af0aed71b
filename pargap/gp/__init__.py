"""The sparse Gaussian process: kernels, sparse models, and the rows of K_NM (serial, no MPI)."""
