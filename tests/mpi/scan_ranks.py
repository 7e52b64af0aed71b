"""Frame index and data hash of a file on however many ranks this runs on (test_scan).

    mpirun -n P python scan_ranks.py FILE.xyz OUT.npz BLOCK
"""

import sys

import numpy as np
from mpi4py import MPI

from pargap.data.frames import read_frames
from pargap.fitting import scan

comm = MPI.COMM_WORLD
path, out, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
scan.BLOCK = block
index = scan.index_frames(comm, path)
digest = scan.data_hash(comm, path)
mine = range(comm.Get_rank(), len(index), comm.Get_size())  # frames another rank may have scanned
assert len(read_frames(scan.frames_for(comm, index, mine), mine)) == len(mine)
full = scan.frames_for(comm, index, range(len(index)))
offsets = [int(full.offsets[i]) for i in range(len(full))]
every = comm.gather((offsets, np.asarray(index.n_atoms).tolist(), digest), root=0)
if comm.Get_rank() == 0:
    assert all(e == every[0] for e in every), "ranks disagree"
    np.savez(out, offsets=every[0][0], counts=every[0][1], digest=digest)
