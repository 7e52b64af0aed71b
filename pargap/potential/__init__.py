"""The fitted potential: the HDF5 file, prediction, predictive variance, charges, the ASE calculator (no MPI)."""
