"""Benchmark: the streamed QR factor against the machine's DGEMM, LAPACK's dgeqrf and SLEPc's TSQR.

    mpirun -n P python bench/solve.py [--block-mb 64] [--nb 64] [--merge 1500] [--drivers gelsd]
                                      [--slepc] [N M ...]     (default sizes: 200000 1000  100000 3000)

Timed in the same run, on the same P cores (one BLAS thread per rank):

- DGEMM: the rate per rank (all ranks at once, best of 3), the yardstick of every rate below;
- merge: one triangle-on-triangle merge at M = --merge on rank 0, by LAPACK tpqrt in place (the
  TSQR tree's) against dgeqrf on a stacked dense copy (the tree before issue 15);
- for each N, M: every rank folds its N/P rows of a random well-conditioned [A | b] in blocks of
  --block-mb MB (the rows are drawn before each block's timer starts):
  - tsqr: per-rank tpqrt folds, then the solve: the tree, the prior rows [I | 0], alpha;
  - scalapack: the blocks (each first reduced on its rank when taller than wide) folded into the
    block-cyclic R (nb x nb blocks, near-square grid), then the solve;
  - slepc (--slepc, when slepc4py is installed): BVOrthogonalize with its TSQR, CholQR and
    TSQRCHOL block methods on the same rows held whole (it needs all of them at once, and forms Q);
  - lstsq: scipy.linalg.lstsq on the gathered matrix on rank 0 with P BLAS threads, for each
    LAPACK driver asked ('' for none).

Flop rates count 2 N M^2 (Householder QR of the rows; the fold's triangle is free with tpqrt) and
are given as a fraction of P x DGEMM. Coefficients are compared with tsqr's; SLEPc's R with tsqr's
by its diagonal. ``auto`` names the solver fit() would choose. Timings on a shared machine are
noisy: repeat before trusting.
"""

import argparse
import ctypes
import time

import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from pargap.linalg import tsqr
from pargap.linalg.factor import RowFactor
from pargap.linalg.solve import choose_solver
from pargap.parallel import world


def blas_threads(n):
    """Set OpenBLAS's thread count (the library numpy, scipy and ScaLAPACK share); False if not OpenBLAS."""
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            ctypes.CDLL(name).openblas_set_num_threads(int(n))
            return True
        except (OSError, AttributeError):
            continue
    return False


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


def block_rows(rank, k, n_rows, M):
    """Block k of this rank's rows, (n_rows, M+1) Fortran-ordered, drawn reproducibly."""
    return np.asfortranarray(np.random.default_rng((1 + rank, k)).normal(size=(n_rows, M + 1)))


def my_blocks(rank, size, N, M, block_mb):
    """Row counts of this rank's blocks; every rank gets as many (the last ones may be empty)."""
    n_p = N // size + (rank < N % size)
    per_block = max(1, int(block_mb * 2**20 / (8 * (M + 1))))
    count = -(-(N // size + 1) // per_block)
    return [max(0, min(per_block, n_p - k * per_block)) for k in range(count)]


def timed(comm, func):
    comm.Barrier()
    start = time.perf_counter()
    result = func()
    return result, max(comm.allgather(time.perf_counter() - start))


def streamed(comm, solver, N, M, block_mb, nb):
    """(solution, fold seconds, solve seconds) of folding this rank's blocks and solving; drawing
    the rows is not timed."""
    rank, size = comm.Get_rank(), comm.Get_size()
    folding = 0.0
    with RowFactor.create(comm, M + 1, solver, **({"block_size": nb} if solver == "scalapack" else {})) as factor:
        for k, n_rows in enumerate(my_blocks(rank, size, N, M, block_mb)):
            rows = block_rows(rank, k, n_rows, M)
            comm.Barrier()
            t = time.perf_counter()
            factor.fold(rows)
            folding += time.perf_counter() - t
            del rows
        solution, solving = timed(comm, lambda: factor.solve(lambda r, c: (r[:, None] == c[None, :]).astype(float)))
    return solution, max(comm.allgather(folding)), solving


def merge_times(M, repeats=2):
    """(tpqrt merge seconds, dgeqrf-on-the-stack seconds), best of ``repeats``, one process."""
    rng = np.random.default_rng(5)
    R0 = np.asfortranarray(np.triu(rng.normal(size=(M + 1, M + 1))))
    S0 = np.asfortranarray(np.triu(rng.normal(size=(M + 1, M + 1))))
    best = [np.inf, np.inf]
    for _ in range(repeats):
        R, S = R0.copy(order="F"), S0.copy(order="F")
        start = time.perf_counter()
        tsqr.merge(R, S)
        best[0] = min(best[0], time.perf_counter() - start)
        start = time.perf_counter()
        stacked = np.empty((2 * (M + 1), M + 1), order="F")  # the old merge: a stacked dense copy
        stacked[:M + 1], stacked[M + 1:] = R0, S0
        scipy.linalg.lapack.dgeqrf(stacked, overwrite_a=True)
        best[1] = min(best[1], time.perf_counter() - start)
    return best


def slepc_times(comm, N, M, block_mb):
    """{block method: (seconds, max relative difference of |diag R| from tsqr's)} of SLEPc's
    BVOrthogonalize on the same rows as :func:`streamed`, held whole on each rank."""
    try:
        import slepc4py

        slepc4py.init()
        from petsc4py import PETSc
        from slepc4py import SLEPc
    except ImportError:
        return None
    rank, size = comm.Get_rank(), comm.Get_size()
    counts = my_blocks(rank, size, N, M, block_mb)
    rows = np.asfortranarray(np.vstack([block_rows(rank, k, n, M) for k, n in enumerate(counts)]))
    n_local = len(rows)
    reference = RowFactor.create(comm, M + 1, "tsqr")
    reference.fold(rows.copy(order="F"))
    R_ref = reference.checkpoint_state().rows
    out = {}
    A = PETSc.Mat().createDense(size=((n_local, N), (None, M + 1)), array=rows, comm=PETSc.COMM_WORLD)
    A.assemble()
    for method in ("TSQR", "CHOL", "TSQRCHOL"):
        bv = SLEPc.BV().createFromMat(A)
        bv.setType(SLEPc.BV.Type.SVEC)  # a copy of the rows, orthogonalised in place into Q
        bv.setOrthogonalization(block=getattr(SLEPc.BV.OrthogBlockType, method))
        R = PETSc.Mat().createDense((M + 1, M + 1), comm=PETSc.COMM_SELF)
        R.setUp()
        _, seconds = timed(comm, lambda: bv.orthogonalize(R))
        error = None
        if rank == 0:
            d, d_ref = np.abs(np.diag(R.getDenseArray())), np.abs(np.diag(R_ref))
            error = float(np.max(np.abs(d - d_ref)) / np.max(d_ref))
        out[method] = (seconds, error)
        bv.destroy()
        R.destroy()
    A.destroy()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[200000, 1000, 100000, 3000])
    parser.add_argument("--block-mb", type=float, default=64.0, help="rows folded at a time per rank (MB)")
    parser.add_argument("--nb", type=int, default=64, help="ScaLAPACK block size")
    parser.add_argument("--merge", type=int, default=1500, help="M of the merge comparison (0: skip)")
    parser.add_argument("--drivers", default="gelsd", help="lstsq drivers, comma-separated ('' for none)")
    parser.add_argument("--slepc", action="store_true", help="also time SLEPc's BVOrthogonalize")
    args = parser.parse_args()
    comm = world()
    rank, size = comm.Get_rank(), comm.Get_size()
    blas_threads(1)
    rate = sum(comm.allgather(dgemm_rate())) / size
    streamed(comm, "scalapack", 64 * size, 20, 1.0, args.nb)  # load ScaLAPACK, start BLACS: not timed below
    if rank == 0:
        print(f"{size} rank(s), 1 BLAS thread each; DGEMM {rate / 1e9:.1f} GFLOP/s per rank; row blocks "
              f"{args.block_mb:g} MB; ScaLAPACK blocks {args.nb}", flush=True)
        if args.merge:
            fast, slow = merge_times(args.merge)
            print(f"merge of two triangles, M={args.merge}: tpqrt {fast:.3f} s, dgeqrf on the stacked copy "
                  f"{slow:.3f} s ({slow / fast:.1f}x)", flush=True)
    for N, M in zip(args.sizes[::2], args.sizes[1::2]):
        flops = 2 * N * M**2

        def report(name, seconds, detail=""):
            if rank == 0:
                print(f"  {name:<18} {seconds:8.2f} s  {flops / seconds / 1e9:6.1f} GFLOP/s = "
                      f"{flops / seconds / (rate * size):4.0%} of {size} x DGEMM{detail}", flush=True)

        def versus(alpha):
            return f"; max relative difference from tsqr {np.max(np.abs(alpha - reference)) / np.max(np.abs(reference)):.1e}"

        auto = choose_solver(comm, M)[0]  # collective
        if rank == 0:
            print(f"N={N} M={M} (auto would choose {auto}):", flush=True)
        solution, folding, solving = streamed(comm, "tsqr", N, M, args.block_mb, args.nb)
        reference = solution.alpha
        report("tsqr folds", folding)
        report("tsqr folds + solve", folding + solving, f"; the solve (tree, prior, alpha) {solving:.2f} s")
        solution, folding, solving = streamed(comm, "scalapack", N, M, args.block_mb, args.nb)
        report("scalapack folds", folding)
        report("scalapack + solve", folding + solving, f"; the solve {solving:.2f} s" + versus(solution.alpha))
        if args.slepc:
            times = slepc_times(comm, N, M, args.block_mb)
            if times is None and rank == 0:
                print("  slepc: slepc4py is not installed", flush=True)
            for method, (seconds, error) in (times or {}).items():
                report(f"slepc BV {method}", seconds, f"; |diag R| relative difference from tsqr {error:.1e}"
                       if error is not None else "")
        drivers = [d for d in args.drivers.split(",") if d]
        if drivers:
            lstsq(comm, N, M, args.block_mb, drivers, report, versus)


def lstsq(comm, N, M, block_mb, drivers, report, versus):
    """scipy's lstsq on the same rows gathered on rank 0 (buffers, not pickles), P BLAS threads."""
    rank, size = comm.Get_rank(), comm.Get_size()
    counts = my_blocks(rank, size, N, M, block_mb)
    mine = np.vstack([block_rows(rank, k, n, M) for k, n in enumerate(counts)])
    if rank != 0:
        comm.Send(np.ascontiguousarray(mine), dest=0, tag=98)
        request = comm.irecv(source=0, tag=99)  # rank 0 runs lstsq on all cores meanwhile:
        while not request.test()[0]:  # wait without spinning a core (MPI's blocking calls busy-poll)
            time.sleep(0.01)
        return
    A = np.zeros((N + M, M + 1), order="F")
    A[N:, :M] = np.eye(M)
    start = 0
    for r in range(size):
        if r:
            n_r = sum(my_blocks(r, size, N, M, block_mb))
            mine = np.empty((n_r, M + 1))
            comm.Recv(mine, source=r, tag=98)
        A[start:start + len(mine)] = mine
        start += len(mine)
    del mine
    b = A[:, M].copy()
    A = A[:, :M]
    blas_threads(size)
    for driver in drivers:
        start = time.perf_counter()
        alpha = scipy.linalg.lstsq(A, b, lapack_driver=driver, check_finite=False)[0]
        report(f"lstsq {driver}", time.perf_counter() - start, versus(alpha))
    blas_threads(1)
    for r in range(1, size):
        comm.send(None, dest=r, tag=99)


if __name__ == "__main__":
    main()
