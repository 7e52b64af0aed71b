"""Phase solve: the coefficients alpha of every model from the factor of the rows folded in
(:mod:`pargap.linalg.factor`); the GP prior K_MM + jitter I = U^T U enters as the rows [U | 0],
given to the factor as tiles so that ScaLAPACK never holds K_MM whole on a rank."""

from pargap.linalg.solve import covariance_sparse_tile
from pargap.parallel import collective


def solve_weights(comm, factor, models, jitter, keep_factor=False):
    """Solve the RowFactor ``factor`` (every row folded in) with the prior of ``models``; sets
    each model's alpha (M_k,) and returns the Solution: the same alpha on every rank, the (M, M)
    R (R^T R = A^T A with the prior) on rank 0 with ``keep_factor`` (none from ScaLAPACK).
    The factor keeps the data's R (a checkpoint may follow)."""
    def prior(rows, cols):
        return covariance_sparse_tile(models, jitter, rows, cols)

    solution = collective(comm, factor.solve, prior, keep_factor=keep_factor and factor.solver != "scalapack")
    start = 0
    for m in models:
        m.alpha = solution.alpha[start:start + m.n_sparse]
        start += m.n_sparse
    return solution
