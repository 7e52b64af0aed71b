"""Least squares for the GP weights: serial QR, tall-skinny QR over ranks, ScaLAPACK, the solver rule."""
