"""What every pargap command shares: MPI start-up, the error policy and exit codes.

Exit codes: 0 success, 1 a reported error (bad input, bad settings, numerical failure),
2 command-line usage error, 3 an unexpected internal error (with traceback).
"""

import sys
import traceback

from pargap.errors import CollectiveError, PargapError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


def start_mpi():
    """The job's communicator (see pargap.parallel.world), or None after printing why MPI could
    not start."""
    from pargap.parallel import world

    try:
        return world()
    except PargapError as exc:
        print(f"pargap: error: {exc}", file=sys.stderr, flush=True)
        return None


def run(body, comm):
    """Run ``body()`` -> exit code. A CollectiveError (raised on all ranks alike) prints one message
    on rank 0 and every rank exits 1; any other exception on one rank is reported with its rank and
    aborts the whole job, so no rank is left waiting."""
    rank = comm.Get_rank()
    try:
        return body()
    except CollectiveError as exc:
        if rank == 0:
            print(f"pargap: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except PargapError as exc:  # raised on this rank alone: the others may wait in a collective
        prefix = f"rank {rank}: " if comm.Get_size() > 1 else ""
        print(f"pargap: error: {prefix}{exc}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1:
            comm.Abort(EXIT_ERROR)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if comm.Get_size() > 1:
            comm.Abort(130)
        return 130
    except Exception:  # noqa: BLE001 - the one place that must catch everything
        print(f"pargap: internal error on rank {rank}:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        if comm.Get_size() > 1:
            comm.Abort(EXIT_INTERNAL)
        return EXIT_INTERNAL
