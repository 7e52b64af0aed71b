"""ctypes bindings to ScaLAPACK and BLACS: process grids, block-cyclic matrices and the few
routines the distributed least-squares solve needs (pdpotrf, pdgeqrf, pdtrtrs, pdtrmv, pdtrsv,
pdgemr2d).

A matrix of global shape (m, n) is cut into mb x nb blocks dealt round-robin over an
nprow x npcol process grid (2-D block-cyclic, first block on process (0, 0)); every rank holds its
blocks as one Fortran-ordered local array. All routines are Fortran: every argument goes by
reference, indices are 1-based, and the matrix arguments are overwritten in place.

The library is Debian's ``libscalapack-openmpi.so.2.2`` (package libscalapack-openmpi-dev),
or the one named by the environment variable PARGAP_SCALAPACK; it must be built against the
MPI that mpi4py uses. Loaded lazily, on the first solve that needs it.
"""

import ctypes
import math
import os

import numpy as np

from pargap.errors import PargapError

LIBRARIES = ("libscalapack-openmpi.so.2.2", "libscalapack-openmpi.so", "libscalapack.so")

_int = ctypes.c_int
_intp = ctypes.POINTER(ctypes.c_int)
_dblp = ctypes.POINTER(ctypes.c_double)
_lib = None
_systems = {}  # BLACS system handle -> grids open on it (BLACS returns one handle per communicator)


def library():
    """The loaded ScaLAPACK shared library (loaded once, with its symbols global for BLACS)."""
    global _lib
    if _lib is not None:
        return _lib
    names = [os.environ["PARGAP_SCALAPACK"]] if os.environ.get("PARGAP_SCALAPACK") else list(LIBRARIES)
    errors = []
    for name in names:
        try:
            _lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        raise PargapError(
            "the ScaLAPACK solver needs the ScaLAPACK library (" + "; ".join(errors) + "): install it "
            "(Debian: apt-get install libscalapack-openmpi-dev) or name it in PARGAP_SCALAPACK"
        )
    _lib.numroc_.restype = _int
    _lib.Csys2blacs_handle.restype = _int
    return _lib


def _ref(value, kind=_int):
    return ctypes.byref(kind(value))


def _ptr(array):
    return array.ctypes.data_as(_dblp)


def _chars(*flags):
    """Fortran CHARACTER arguments: the pointers, and their hidden lengths (passed last)."""
    return [ctypes.c_char_p(f.encode()) for f in flags], [ctypes.c_size_t(1) for _ in flags]


def grid_shape(size):
    """Near-square process grid (nprow, npcol), nprow >= npcol: tall, as the matrices are."""
    npcol = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    return size // npcol, npcol


def numroc(n, nb, iproc, nprocs):
    """Number of rows (or columns) of an n-long, nb-blocked dimension held by process iproc of nprocs."""
    return library().numroc_(_ref(n), _ref(nb), _ref(iproc), _ref(0), _ref(nprocs))


def local_to_global(n_local, nb, iproc, nprocs):
    """0-based global indices of a process's n_local local rows (or columns), ascending."""
    local = np.arange(n_local)
    return (local // nb) * nprocs * nb + iproc * nb + local % nb


class Grid:
    """A BLACS process grid over an mpi4py communicator, ranks in row-major order. A context
    manager: ``close()`` (or leaving the with block) frees the BLACS context on every rank."""

    def __init__(self, comm, nprow, npcol):
        from mpi4py import MPI

        lib = library()
        if nprow * npcol != comm.Get_size():
            raise PargapError(f"a {nprow} x {npcol} process grid needs {nprow * npcol} ranks, not {comm.Get_size()}")
        handle = MPI._handleof(comm)
        kind = ctypes.c_void_p if MPI._sizeof(MPI.Comm) == ctypes.sizeof(ctypes.c_void_p) else ctypes.c_int
        self._system = lib.Csys2blacs_handle(kind(handle))
        _systems[self._system] = _systems.get(self._system, 0) + 1
        context = _int(self._system)
        lib.Cblacs_gridinit(ctypes.byref(context), ctypes.c_char_p(b"Row"), _int(nprow), _int(npcol))
        self.context = context.value
        info = [_int() for _ in range(4)]
        lib.Cblacs_gridinfo(_int(self.context), *[ctypes.byref(v) for v in info])
        self.nprow, self.npcol, self.myrow, self.mycol = (v.value for v in info)
        if self.myrow < 0:
            raise PargapError("BLACS could not place this rank on the process grid")

    def close(self):
        if self.context is not None:
            library().Cblacs_gridexit(_int(self.context))
            self.context = None
            _systems[self._system] -= 1
            if not _systems[self._system]:
                del _systems[self._system]
                library().Cfree_blacs_system_handle(_int(self._system))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Distributed:
    """This rank's part of an (m, n) matrix, mb x nb blocks, block-cyclic on ``grid``.

    local: (numroc rows, numroc columns), Fortran-ordered, zeros unless ``local`` is given (then
    it must be Fortran-ordered float64 of that shape, and is used without a copy).
    rows, cols: 0-based global indices of the local rows and columns. desc: the ScaLAPACK descriptor."""

    def __init__(self, grid, m, n, mb, nb, local=None):
        self.grid, self.shape = grid, (m, n)
        n_rows = numroc(m, mb, grid.myrow, grid.nprow)
        n_cols = numroc(n, nb, grid.mycol, grid.npcol)
        if local is None:
            local = np.zeros((n_rows, n_cols), order="F")
        elif local.shape != (n_rows, n_cols) or local.dtype != np.float64 or not local.flags.f_contiguous:
            raise ValueError(f"local part must be Fortran float64 {(n_rows, n_cols)}, got {local.shape}")
        self.local = local
        self.rows = local_to_global(n_rows, mb, grid.myrow, grid.nprow)
        self.cols = local_to_global(n_cols, nb, grid.mycol, grid.npcol)
        self.desc = (_int * 9)()
        info = _int()
        library().descinit_(self.desc, _ref(m), _ref(n), _ref(mb), _ref(nb), _ref(0), _ref(0),
                            _ref(grid.context), _ref(max(1, n_rows)), ctypes.byref(info))
        if info.value != 0:
            raise PargapError(f"ScaLAPACK descinit failed (info={info.value}) for a {m} x {n} matrix")


def _check(name, info):
    if info.value < 0:  # an argument error is a bug here, never the user's
        raise RuntimeError(f"ScaLAPACK {name}: argument {-info.value} is illegal")
    return info.value


def copy(m, n, A, ia, ja, B, ib, jb, context):
    """B[ib:ib+m, jb:jb+n] = A[ia:ia+m, ja:ja+n] (1-based corners) between any two layouts
    (pdgemr2d); ``context`` must hold every process of both grids."""
    library().pdgemr2d_(_ref(m), _ref(n), _ptr(A.local), _ref(ia), _ref(ja), A.desc,
                        _ptr(B.local), _ref(ib), _ref(jb), B.desc, _ref(context))


def potrf(n, A, ia=1, ja=1):
    """Cholesky A = U^T U of the n x n submatrix at (ia, ja), upper triangle (pdpotrf). Returns
    info: 0, or k > 0 when the leading minor of order k is not positive definite."""
    info = _int()
    (uplo,), lengths = _chars("U")
    library().pdpotrf_(uplo, _ref(n), _ptr(A.local), _ref(ia), _ref(ja), A.desc, ctypes.byref(info), *lengths)
    return _check("pdpotrf", info)


def geqrf(m, n, A, ia=1, ja=1):
    """Householder QR of the m x n submatrix at (ia, ja) in place (pdgeqrf): R in the upper
    triangle, the reflectors below. Returns tau (local)."""
    lib = library()
    tau = np.zeros(max(1, A.local.shape[1]))
    info, query = _int(), np.zeros(1)
    args = (_ref(m), _ref(n), _ptr(A.local), _ref(ia), _ref(ja), A.desc, _ptr(tau))
    lib.pdgeqrf_(*args, _ptr(query), _ref(-1), ctypes.byref(info))
    _check("pdgeqrf", info)
    work = np.zeros(max(1, int(query[0])))
    lib.pdgeqrf_(*args, _ptr(work), _ref(len(work)), ctypes.byref(info))
    _check("pdgeqrf", info)
    return tau


def trmv(trans, n, A, x):
    """x = op(U) x for the upper n x n triangle U of A at (1, 1), op = identity (trans "N") or
    transpose ("T"); x an n x 1 Distributed on the same grid, blocked as A's rows (pdtrmv)."""
    flags, lengths = _chars("U", trans, "N")
    library().pdtrmv_(*flags, _ref(n), _ptr(A.local), _ref(1), _ref(1), A.desc,
                      _ptr(x.local), _ref(1), _ref(1), x.desc, _ref(1), *lengths)


def trsv(trans, n, A, x):
    """x = op(U)^-1 x, as :func:`trmv` (pdtrsv)."""
    flags, lengths = _chars("U", trans, "N")
    library().pdtrsv_(*flags, _ref(n), _ptr(A.local), _ref(1), _ref(1), A.desc,
                      _ptr(x.local), _ref(1), _ref(1), x.desc, _ref(1), *lengths)


def trtrs(n, nrhs, A, ia, ja, B, ib, jb):
    """Solve U X = B in place for the upper n x n triangle of A at (ia, ja) and the n x nrhs block
    of B at (ib, jb) (pdtrtrs; square blocks, aligned rows). Returns info: 0, or k > 0 when
    U_kk = 0."""
    info = _int()
    flags, lengths = _chars("U", "N", "N")
    library().pdtrtrs_(*flags, _ref(n), _ref(nrhs), _ptr(A.local), _ref(ia), _ref(ja), A.desc,
                       _ptr(B.local), _ref(ib), _ref(jb), B.desc, ctypes.byref(info), *lengths)
    return _check("pdtrtrs", info)
