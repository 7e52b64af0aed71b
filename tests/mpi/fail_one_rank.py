"""Under mpirun: one rank fails while the others wait in a collective; the job must end.

    mpirun -n 3 python fail_one_rank.py pargap|internal
"""

import sys

from pargap.cli.common import run
from pargap.errors import PargapError
from pargap.parallel import world

comm = world()


def body():
    if comm.Get_rank() == 1:
        if sys.argv[1] == "pargap":
            raise PargapError("injected failure")
        raise RuntimeError("injected bug")
    comm.Barrier()  # the other ranks wait for rank 1, which never comes
    return 0


sys.exit(run(body, comm))
