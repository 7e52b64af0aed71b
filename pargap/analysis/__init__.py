"""Analysis of structures and fits: error tables and parity plots, global structure kernels."""
