"""Benchmark: the distributed least-squares solve against scipy's lstsq and the machine's DGEMM rate.

    mpirun -n P python bench/solve.py [N M ...]      (default: 200000 1000  100000 3000)

Each rank holds N/P rows of a random well-conditioned [A | b]; tsqr_solve_block factorises them
in place and reduces the R factors. Reported: wall time, the Householder QR flop rate
(2 N M^2 - 2 M^3 / 3 flops) as a fraction of this machine's DGEMM rate per rank measured in the
same run, and, on one rank, scipy.linalg.lstsq on the same matrix (driver gelsd, its default,
and gelsy). Agreement of the coefficients is printed too.
"""

import sys
import time

import numpy as np
import scipy.linalg

from pargap.parallel import world
from pargap.solve import cholesky_factor, tsqr_solve_block


def dgemm_rate(n=2000):
    a = np.random.default_rng(0).normal(size=(n, n))
    a @ a
    start = time.perf_counter()
    a @ a
    return 2 * n**3 / (time.perf_counter() - start)


def main():
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = [int(v) for v in sys.argv[1:]] or [200000, 1000, 100000, 3000]
    rate = sum(comm.allgather(dgemm_rate())) / size
    if rank == 0:
        print(f"{size} rank(s); DGEMM {rate / 1e9:.1f} GFLOP/s per rank")
    for N, M in zip(sizes[::2], sizes[1::2]):
        rng = np.random.default_rng(1 + rank)
        n_p = N // size + (rank < N % size)
        block = np.asfortranarray(rng.normal(size=(n_p, M + 1)))
        reference_block = block.copy() if size == 1 else None
        U = cholesky_factor(np.eye(M)) if rank == 0 else None
        comm.allgather(None)  # start together
        start = time.perf_counter()
        solution = tsqr_solve_block(comm, block, U)
        seconds = max(comm.allgather(time.perf_counter() - start))
        flops = 2 * N * M**2 - 2 * M**3 / 3
        if rank == 0:
            print(f"N={N} M={M}: tsqr {seconds:.2f} s, {flops / seconds / 1e9:.1f} GFLOP/s = "
                  f"{flops / seconds / (rate * size):.0%} of {size} x DGEMM")
        if size == 1:
            A = np.vstack([reference_block[:, :M], np.eye(M)])
            b = np.concatenate([reference_block[:, M], np.zeros(M)])
            for driver in ("gelsd", "gelsy"):
                start = time.perf_counter()
                ref = scipy.linalg.lstsq(A, b, lapack_driver=driver)[0]
                t = time.perf_counter() - start
                diff = np.max(np.abs(ref - solution.alpha)) / np.max(np.abs(ref))
                print(f"  scipy lstsq ({driver}) {t:.2f} s: tsqr is {t / seconds:.1f}x faster; "
                      f"max relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
