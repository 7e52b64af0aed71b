"""pargap-compare: the SOAP similarity matrix of a structure database (or between two), with MPI.

    pargap-compare db.xyz -o K.h5 --soap "l_max=6 n_max=8 cutoff=5.0 atom_sigma=0.5 zeta=2"
    mpirun -n 8 pargap-compare db.xyz other.xyz --kernel rematch --gamma 0.05 -o K.h5
    pargap-compare db.xyz -o K.h5 --select 20 --select-out diverse.xyz --map map.png

Layout: the structures are split over the ranks by atom count; each rank computes the SOAP
environments (and the self kernel K(A, A)) of its own structures once. The matrix is cut into
fixed tiles of --tile x --tile structures (upper triangle only for one database), assigned to ranks
by cost; each rank receives the environments its tiles need from their owners (one alltoall),
computes its tiles and writes them into the HDF5 dataset ``kernel`` (n_A, n_B) with parallel HDF5.
The file is written under a temporary name and renamed by rank 0 after every rank closed it.
"""

import argparse
import os
import sys

import numpy as np

from pargap.cli.common import EXIT_ERROR, EXIT_USAGE, run, start_mpi
from pargap.version import __version__

DEFAULT_SOAP = "l_max=6 n_max=8 cutoff=5.0 atom_sigma=0.5 zeta=2"
FIT_ONLY_KEYS = ("delta", "n_sparse", "sparse_method", "add_species", "f0", "covariance_sigma0")


def parser():
    p = argparse.ArgumentParser(
        prog="pargap-compare",
        description="Global SOAP similarity kernels between structures: the average kernel, the best "
        "match or REMatch, normalised so that K(A, A) = 1; the full matrix of a database (or between "
        "two) in parallel, written to HDF5 (dataset 'kernel').",
        epilog="Run under MPI with: mpirun -n P pargap-compare ... . Exit codes: 0 ok, 1 error, 2 usage, 3 internal.",
    )
    p.add_argument("structures", help="structures (any format ASE reads, e.g. extended XYZ)")
    p.add_argument("other", nargs="?", help="second set: the matrix is structures x other")
    p.add_argument("-o", "--output", required=True, help="HDF5 output file (dataset 'kernel', n_A x n_B)")
    soap = p.add_mutually_exclusive_group()
    soap.add_argument("--soap", default=DEFAULT_SOAP,
                      help=f"SOAP settings as in gap_fit's soap string, plus zeta (default: \"{DEFAULT_SOAP}\")")
    soap.add_argument("--soap-from", metavar="POTENTIAL",
                      help="take the SOAP settings and zeta from the first SOAP model of a potential: pargap "
                      "HDF5 or QUIP GAP XML (e.g. gap_fit's)")
    p.add_argument("--kernel", choices=("average", "rematch", "bestmatch"), default="average",
                   help="global kernel (default: average)")
    p.add_argument("--gamma", type=float, default=0.1, help="REMatch regularisation gamma (default 0.1)")
    p.add_argument("--select", type=int, metavar="K",
                   help="farthest-point selection of K diverse structures (d = sqrt(2 - 2K))")
    p.add_argument("--select-out", metavar="FILE.xyz",
                   help="write the selected structures here (extended XYZ); default: print their indices")
    p.add_argument("--map", metavar="MAP.png", help="draw a 2-D kernel-PCA map coloured by config_type")
    p.add_argument("--tile", type=int, default=100,
                   help="tile size in structures (default 100; memory ~ (tile x atoms)^2 x 8 bytes)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--version", action="version", version=f"pargap {__version__}")
    return p


def soap_settings(text):
    """``l_max=6 n_max=8 cutoff=5 atom_sigma=0.5 zeta=2`` (a leading ``soap`` is optional) ->
    (Soap keyword arguments, zeta). Fit-only keys (delta, n_sparse, ...) are accepted and ignored,
    so that a fit's soap string can be pasted; other unknown keys are errors."""
    import difflib

    from pargap.analysis.compare import SOAP_KEYS
    from pargap.settings.config import parse_gap_string
    from pargap.errors import ConfigError

    text = text.strip()
    if text.split(None, 1)[:1] != ["soap"]:
        text = "soap " + text
    entries = parse_gap_string(text)
    if len(entries) != 1 or entries[0]["descriptor"] != "soap":
        raise ConfigError(f"--soap: expected one soap descriptor, got '{text}'")
    entry = dict(entries[0])
    entry.pop("descriptor")
    zeta = entry.pop("zeta", 2.0)
    covariance = entry.pop("covariance_type", "dot_product")
    if covariance != "dot_product":
        raise ConfigError(f"--soap: structure kernels use covariance_type=dot_product, got '{covariance}'")
    for key in ("n_species", "species_Z", "Z"):
        if key in entry:
            raise ConfigError(f"--soap: '{key}' is set by pargap-compare (one SOAP per centre species, "
                              "every species of the structures as neighbours)")
    soap = {}
    for key, value in entry.items():
        if key in FIT_ONLY_KEYS:
            continue
        if key not in SOAP_KEYS:
            close = difflib.get_close_matches(key, SOAP_KEYS + ("zeta",), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"--soap: unknown setting '{key}'{hint}")
        soap[key] = value
    for key in ("l_max", "n_max", "atom_sigma", "cutoff"):
        if key not in soap:
            raise ConfigError(f"--soap: {key} is required")
    if not float(zeta) > 0:
        raise ConfigError(f"--soap: zeta must be positive, got {zeta}")
    return soap, float(zeta)


def soap_from_potential(path):
    """The settings of the first SOAP model of a potential file (HDF5 or GAP XML) as a --soap string."""
    from pargap.analysis.compare import SOAP_KEYS
    from pargap.errors import InputError
    from pargap.potential.potential import Potential

    models = [m for m in Potential.load(path).models if m.descriptor.name == "soap"]
    if not models or models[0].kernel.name != "dot_product":
        raise InputError("no SOAP model with a dot_product kernel in this potential", file=path)
    params = models[0].descriptor.params()
    keys = [k for k in SOAP_KEYS if k != "central_reference_all_species"]  # set per species by compare
    return " ".join(f"{k}={str(params[k]).lower() if isinstance(params[k], bool) else params[k]}" for k in keys) \
        + f" zeta={models[0].kernel.zeta}"


def read_structures(path):
    """All frames of a file on this rank (parallel=False: ASE would broadcast from rank 0 and hang)."""
    import ase.io

    from pargap.errors import InputError

    try:
        frames = ase.io.read(path, ":", parallel=False)
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
        raise InputError(f"cannot read structures: {exc}", file=path) from None
    if not frames:
        raise InputError("no structures", file=path)
    return frames


def exchange(comm, owned, needs):
    """Send every rank the environments it needs. owned: {index: Environments} of this rank;
    needs[r]: the set of indices rank r needs (the same list on every rank). Returns
    {index: Environments} for needs[rank]. The vectors travel as one float64 buffer per rank pair
    (Alltoallv, no pickling); the labels (index, length, centre species) in a small alltoall."""
    from pargap.analysis.compare import Environments

    rank, size = comm.Get_rank(), comm.Get_size()
    if size == 1:
        return {i: owned[i] for i in needs[0]}
    from mpi4py import MPI

    D = max(comm.allgather(max((e.X.shape[1] for e in owned.values()), default=0)))
    send_idx = [sorted(i for i in owned if i in needs[r]) for r in range(size)]
    meta = comm.alltoall([[(i, owned[i].Z) for i in idx] for idx in send_idx])
    parts = [owned[i].X for idx in send_idx for i in idx]
    send = np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros((0, D))).reshape(-1)
    send_counts = np.array([sum(len(owned[i]) for i in idx) * D for idx in send_idx])
    recv_counts = np.array([sum(len(Z) for _, Z in part) * D for part in meta])
    if max(comm.allgather(int(max(send_counts.sum(), recv_counts.sum())))) >= 2**31:  # same on all ranks
        from pargap.errors import PargapError

        raise PargapError("environments to exchange exceed 2^31 numbers per rank: use more ranks")
    recv = np.empty(int(recv_counts.sum()))
    displ = lambda counts: np.r_[0, np.cumsum(counts)[:-1]]  # noqa: E731
    comm.Alltoallv([send, (send_counts, displ(send_counts)), MPI.DOUBLE],
                   [recv, (recv_counts, displ(recv_counts)), MPI.DOUBLE])
    got, at = {}, 0
    for part in meta:
        for i, Z in part:
            n = len(Z) * D
            got[i] = Environments(recv[at:at + n].reshape(len(Z), D), Z)
            at += n
    return got


class Distributed:
    """The distributed computation: ownership of structures, tiles of the matrix, their blocks."""

    def __init__(self, comm, frames_a, frames_b, soap, zeta, kernel, gamma, tile, log):
        from pargap.analysis.compare import StructureSoap, plan_tiles, species_of, tile_cost
        from pargap.parallel import balanced_partition

        self.comm, self.log = comm, log
        self.symmetric = frames_b is None
        self.zeta, self.kernel, self.gamma = zeta, kernel, gamma
        rank, size = comm.Get_rank(), comm.Get_size()
        frames = list(frames_a) + ([] if self.symmetric else list(frames_b))
        self.n_a = len(frames_a)
        self.n_b = self.n_a if self.symmetric else len(frames_b)
        # global structure index g: A is 0..n_a-1, B (if any) n_a..n_a+n_b-1
        n_atoms = np.array([len(a) for a in frames])
        self.structure_soap = StructureSoap(species_of(frames), **soap)
        self.owner_lists = balanced_partition(n_atoms.tolist(), size)
        self.own = self.owner_lists[rank]
        self.frames = frames
        self.offset_b = 0 if self.symmetric else self.n_a
        atoms_a, atoms_b = n_atoms[:self.n_a], n_atoms[self.offset_b:self.offset_b + self.n_b]
        self.tiles = plan_tiles(self.n_a, self.n_b, self.symmetric, tile)
        costs = [tile_cost(t, atoms_a, atoms_b) for t in self.tiles]
        self.tile_lists = balanced_partition(costs, size)
        self.needs = [set() for _ in range(size)]
        for r in range(size):
            for k in self.tile_lists[r]:
                t = self.tiles[k]
                self.needs[r].update(range(t.r0, t.r1))
                self.needs[r].update(range(self.offset_b + t.c0, self.offset_b + t.c1))

    def environments(self):
        """SOAP and self kernel of own structures; then every rank gets what its tiles need."""
        from pargap.analysis.compare import self_kernels

        own_envs = {g: self.structure_soap(self.frames[g]) for g in self.own}
        diag_own = self_kernels([own_envs[g] for g in self.own], zeta=self.zeta, kernel=self.kernel, gamma=self.gamma)
        diag = np.zeros(len(self.frames))
        for part in self.comm.allgather(list(zip(self.own, diag_own.tolist()))):
            for g, value in part:
                diag[g] = value
        if not np.all(diag > 0):
            bad = int(np.flatnonzero(~(diag > 0))[0])
            from pargap.errors import PargapError

            raise PargapError(f"structure {bad} has a non-positive self kernel K(A, A) = {diag[bad]} "
                              "(no SOAP environments? every atom's species is a centre)")
        self.diag = diag
        self.envs = exchange(self.comm, own_envs, self.needs)

    def blocks(self):
        """Yield (tile, normalised block) for this rank's tiles; progress of rank 0 logged."""
        from pargap.analysis.compare import normalise, raw_block

        mine = self.tile_lists[self.comm.Get_rank()]
        diag_a = self.diag[:self.n_a]
        diag_b = self.diag[self.offset_b:self.offset_b + self.n_b]
        step = max(1, len(mine) // 10)
        for done, k in enumerate(mine, 1):
            t = self.tiles[k]
            rows = [self.envs[g] for g in range(t.r0, t.r1)]
            cols = [self.envs[self.offset_b + g] for g in range(t.c0, t.c1)]
            block = raw_block(rows, cols, zeta=self.zeta, kernel=self.kernel, gamma=self.gamma)
            block = normalise(block, diag_a[t.r0:t.r1], diag_b[t.c0:t.c1])
            if self.symmetric and t.r0 == t.c0:  # diagonal tile: exactly symmetric, ones on the diagonal
                block = 0.5 * (block + block.T)
                np.fill_diagonal(block, 1.0)
            if done % step == 0 or done == len(mine):
                self.log(f"kernel: rank 0 finished {done}/{len(mine)} tiles ({len(self.tiles)} in all)")
            yield t, block


def write_kernel(comm, path, shape, blocks, attrs):
    """Write the tiles into dataset 'kernel' of ``path``: parallel HDF5 when h5py has MPI and the job
    has several ranks, else gathered to rank 0. Written as path.tmp-XXXX and renamed by rank 0
    after every rank closed the file."""
    import h5py

    size, rank = comm.Get_size(), comm.Get_rank()
    path = os.path.abspath(path)
    tmp = comm.bcast(f"{path}.tmp-{os.getpid()}" if rank == 0 else None, root=0)
    parallel = size > 1 and h5py.get_config().mpi

    def fill(dset, parts):
        for t, block in parts:
            dset[t.r0:t.r1, t.c0:t.c1] = block
            if t.mirror:
                dset[t.c0:t.c1, t.r0:t.r1] = block.T

    def decorate(f):
        dset = f.create_dataset("kernel", shape, dtype="f8")
        for key, value in attrs.items():
            f.attrs[key] = value
        return dset

    if parallel:
        with h5py.File(tmp, "w", driver="mpio", comm=comm) as f:
            fill(decorate(f), blocks)
    else:
        gathered = comm.gather(list(blocks), root=0)
        if rank == 0:
            with h5py.File(tmp, "w") as f:
                dset = decorate(f)
                for parts in gathered:
                    fill(dset, parts)
    comm.Barrier()
    if rank == 0:
        os.replace(tmp, path)
    comm.Barrier()


def draw_map(path, K, labels, title):
    """Kernel-PCA map (first two components) coloured by label, saved with matplotlib's Agg backend."""
    from pargap.errors import PargapError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PargapError("--map needs matplotlib (pip install matplotlib)") from None
    from pargap.analysis.compare import kernel_pca

    xy = kernel_pca(K, 2)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    kinds = sorted(set(labels))
    colours = plt.get_cmap("tab20" if len(kinds) > 10 else "tab10")
    for k, label in enumerate(kinds):
        sel = np.array([lab == label for lab in labels])
        ax.scatter(xy[sel, 0], xy[sel, 1], s=12, label=label, alpha=0.8, color=colours(k % colours.N))
    ax.set_xlabel("kernel PC 1")
    ax.set_ylabel("kernel PC 2")
    ax.set_title(title)
    if len(set(labels)) <= 20:
        ax.legend(fontsize=7, markerscale=1.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def config_label(atoms):
    """config_type if present, else the chemical formula."""
    return str(atoms.info.get("config_type", atoms.get_chemical_formula()))


def main(argv=None):
    args = parser().parse_args(argv)
    if args.other is not None and (args.select or args.map):
        print("pargap-compare: error: --select and --map need one database (no OTHER)", file=sys.stderr)
        return EXIT_USAGE
    if args.select_out and not args.select:
        print("pargap-compare: error: --select-out needs --select K", file=sys.stderr)
        return EXIT_USAGE
    if args.tile < 1:
        print("pargap-compare: error: --tile must be at least 1", file=sys.stderr)
        return EXIT_USAGE

    comm = start_mpi()
    if comm is None:
        return EXIT_ERROR

    def body():
        from pargap.analysis.compare import farthest_point_selection
        from pargap.errors import CollectiveError
        from pargap.parallel import collective
        from pargap.progress import Log, PhaseTimer

        if args.soap_from:
            args.soap = collective(comm, soap_from_potential, args.soap_from)
        soap, zeta = collective(comm, soap_settings, args.soap)
        if args.kernel == "rematch" and not args.gamma > 0:
            raise CollectiveError(f"--gamma must be positive, got {args.gamma}")  # same on every rank
        log = Log(comm, quiet=args.quiet)
        timer = PhaseTimer(comm, log)
        with timer.phase("read"):
            frames_a = collective(comm, read_structures, args.structures)
            frames_b = None if args.other is None else collective(comm, read_structures, args.other)
        n_b = len(frames_a) if frames_b is None else len(frames_b)
        log(f"pargap-compare on {comm.Get_size()} rank(s): {len(frames_a)} x {n_b} structures, "
            f"kernel {args.kernel}" + (f" (gamma {args.gamma})" if args.kernel == "rematch" else "")
            + f", zeta {zeta:g}")
        job = collective(comm, Distributed, comm, frames_a, frames_b, soap, zeta, args.kernel,
                         args.gamma, args.tile, log)
        with timer.phase("soap"):
            collective(comm, job.environments)
        with timer.phase("kernel"):
            blocks = collective(comm, lambda: list(job.blocks()))
        attrs = {"kernel_type": args.kernel, "gamma": args.gamma if args.kernel == "rematch" else np.nan,
                 "zeta": zeta, "soap": args.soap, "species": np.array(job.structure_soap.species),
                 "structures": os.path.abspath(args.structures),
                 "other": os.path.abspath(args.other) if args.other else ""}
        with timer.phase("write"):
            write_kernel(comm, args.output, (job.n_a, job.n_b), blocks, attrs)
        if args.select or args.map:
            gathered = comm.gather(blocks, root=0)
            if comm.Get_rank() == 0:
                K = np.zeros((job.n_a, job.n_b))
                for parts in gathered:
                    for t, block in parts:
                        K[t.r0:t.r1, t.c0:t.c1] = block
                        if t.mirror:
                            K[t.c0:t.c1, t.r0:t.r1] = block.T
            else:
                K = None

            def finish():
                if args.select:
                    chosen = farthest_point_selection(K, args.select)
                    if args.select_out:
                        import ase.io

                        ase.io.write(args.select_out, [frames_a[i] for i in chosen], format="extxyz")
                        log(f"wrote {len(chosen)} selected structures to {args.select_out}")
                    else:
                        print(" ".join(str(i) for i in chosen), flush=True)
                if args.map:
                    draw_map(args.map, K, [config_label(a) for a in frames_a],
                             f"{os.path.basename(args.structures)}: {args.kernel} SOAP kernel PCA")
                    log(f"wrote the map {args.map}")

            from pargap.parallel import on_root

            on_root(comm, finish)
        summary = timer.summary()
        log(f"wrote {args.output}; total {summary['total_seconds']:.2f} s")
        return 0

    return run(body, comm)


if __name__ == "__main__":
    sys.exit(main())
