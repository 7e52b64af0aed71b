"""Benchmark: the distributed least-squares solvers against scipy's lstsq and the machine's DGEMM rate.

    mpirun -n P python bench/solve.py [--nb 64] [--drivers gelsd[,gelsy]] [N M ...]
                                      (default sizes: 200000 1000  100000 3000)

Each rank holds N/P rows of a random well-conditioned [A | b] (the prior rows are [I | 0]).
Timed, in the same run and on the same P cores:

- tsqr: tsqr_solve_block, each rank factorising its rows in place, R factors reduced up a tree;
- scalapack: scalapack_solve, 2-D block-cyclic QR (nb x nb blocks, near-square grid), K_MM = I
  built and factorised distributed;
- lstsq: scipy.linalg.lstsq on the gathered matrix on rank 0 with P OpenBLAS threads (the other
  ranks sleep meanwhile), for each LAPACK driver asked (gelsd is scipy's default);
- DGEMM: the rate per rank (one thread each, all ranks at once, best of 3) before the solves.

Flop rates count Householder QR as 2 N M^2 - 2 M^3 / 3 and are given as a fraction of P x DGEMM.
The coefficients of every method are compared with TSQR's. ``auto`` names the solver fit() would
choose for this M on these ranks. Timings on a shared machine are noisy: repeat before trusting.
"""

import argparse
import ctypes
import time

import numpy as np
import scipy.linalg

from pargap.gp.model import cholesky_factor
from pargap.linalg.solve import choose_solver, scalapack_solve, tsqr_solve_block
from pargap.parallel import world


def dgemm_rate(n=2000, repeats=3):
    """Best of ``repeats`` n x n DGEMMs (flop/s): on a shared machine the least disturbed one."""
    a = np.random.default_rng(0).normal(size=(n, n))
    a @ a
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def openblas_threads(n):
    """Set OpenBLAS's thread count (the library numpy, scipy and ScaLAPACK share); False if not OpenBLAS."""
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(name).openblas_set_num_threads(int(n))
            return True
        except (OSError, AttributeError):
            continue
    return False


def rows(rank, size, N, M):
    n_p = N // size + (rank < N % size)
    return np.asfortranarray(np.random.default_rng(1 + rank).normal(size=(n_p, M + 1)))


def idle_until(comm, flag):
    """Wait for rank 0 without spinning a core (MPI's blocking calls busy-poll)."""
    request = comm.irecv(source=0, tag=flag)
    while True:
        done, _ = request.test()
        if done:
            return
        time.sleep(0.01)


def timed(comm, func):
    comm.Barrier()
    start = time.perf_counter()
    result = func()
    return result, max(comm.allgather(time.perf_counter() - start))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[200000, 1000, 100000, 3000])
    parser.add_argument("--nb", type=int, default=64, help="ScaLAPACK block size")
    parser.add_argument("--drivers", default="gelsd", help="lstsq drivers, comma-separated ('' for none)")
    args = parser.parse_args()
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    rate = sum(comm.allgather(dgemm_rate())) / size
    warm = rows(rank, size, 64 * size, 20)  # load ScaLAPACK, start BLACS: not timed below
    scalapack_solve(comm, warm, lambda r, c: (r[:, None] == c[None, :]).astype(float), block_size=args.nb)
    if rank == 0:
        print(f"{size} rank(s); DGEMM {rate / 1e9:.1f} GFLOP/s per rank; ScaLAPACK blocks {args.nb}")
    for N, M in zip(args.sizes[::2], args.sizes[1::2]):
        flops = 2 * N * M**2 - 2 * M**3 / 3
        auto = choose_solver(comm, M)[0]

        def report(name, seconds, alpha=None):
            if rank != 0:
                return
            diff = "" if alpha is None else "; max relative difference from tsqr " \
                f"{np.max(np.abs(alpha - reference)) / np.max(np.abs(reference)):.1e}"
            print(f"  {name:<14} {seconds:8.2f} s  {flops / seconds / 1e9:6.1f} GFLOP/s = "
                  f"{flops / seconds / (rate * size):4.0%} of {size} x DGEMM{diff}", flush=True)

        if rank == 0:
            print(f"N={N} M={M} (auto would choose {auto}):", flush=True)
        block = rows(rank, size, N, M)
        U = cholesky_factor(np.eye(M)) if rank == 0 else None
        solution, seconds = timed(comm, lambda: tsqr_solve_block(comm, block, U))
        reference = solution.alpha
        report("tsqr", seconds)
        del block

        block = rows(rank, size, N, M)
        solution, seconds = timed(comm, lambda: scalapack_solve(
            comm, block, lambda r, c: (r[:, None] == c[None, :]).astype(float), block_size=args.nb))
        report("scalapack", seconds, solution.alpha)

        drivers = [d for d in args.drivers.split(",") if d]
        if not drivers:
            continue
        del block  # factorised in place: the gathered matrix is drawn again
        mine = rows(rank, size, N, M)
        if rank == 0:  # buffers, not pickles: a block may pass 2 GB
            A = np.zeros((N + M, M + 1), order="F")
            A[N:, :M] = np.eye(M)
            start = 0
            for r in range(size):
                if r:
                    mine = np.empty((N // size + (r < N % size), M + 1), order="F")
                    comm.Recv(mine, source=r, tag=98)
                A[start:start + len(mine)] = mine
                start += len(mine)
            del mine
            b = A[:, M].copy()
            A = A[:, :M]  # a Fortran-ordered view
            threads = openblas_threads(size)
            for driver in drivers:
                start = time.perf_counter()
                alpha = scipy.linalg.lstsq(A, b, lapack_driver=driver, check_finite=False)[0]
                report(f"lstsq {driver}", time.perf_counter() - start, alpha)
            if threads:
                openblas_threads(1)
            del A, b
            for r in range(1, size):
                comm.send(None, dest=r, tag=99)
        else:
            comm.Send(mine, dest=0, tag=98)
            del mine
            idle_until(comm, 99)


if __name__ == "__main__":
    main()
