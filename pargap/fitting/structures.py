"""Phase read: the training structures, indexed on rank 0, partitioned by cost and read by the
ranks that own them (each rank reads only its own frames)."""

import numpy as np

from pargap.data.frames import extract, read_frames, scan_frames
from pargap.descriptors.neighbours import neighbour_list
from pargap.parallel import collective, on_root, partition_structures


STRUCTURE_OVERHEAD = 30
"""Fixed cost of a structure's rows (Python calls, neighbour-list set-up) in neighbour-pair units:
measured about 0.45 ms against 15 us per pair + atom (2b + SOAP n_max 8, l_max 6, 230 points)."""


def structure_cost(atoms, cutoff):
    """Row-building cost of a structure: its neighbour pairs within the cutoff plus its atoms
    (descriptor gradients grow with the pairs, force rows with the atoms) plus a fixed
    STRUCTURE_OVERHEAD (which dominates for small clusters)."""
    return len(neighbour_list(atoms, cutoff)[0]) + len(atoms) + STRUCTURE_OVERHEAD


def load_structures(comm, settings, log, check_sigma=True, skip=(), index=None):
    """Index the file on rank 0, partition, read and validate this rank's structures.

    A first partition by atom counts lets every rank read its share and count neighbour pairs;
    with more than one rank, the structures are then re-partitioned by that cost and each rank
    reads the ones it gained (reading is cheap beside the rows). Structures in ``skip`` (file
    indices, e.g. already in a checkpoint) are left out; ``index`` is the file's FrameIndex if
    already made."""
    path = settings.at_file
    index = index or on_root(comm, scan_frames, path)
    rank, size = comm.Get_rank(), comm.Get_size()
    skip = {int(i) for i in skip}
    todo = [i for i in range(len(index)) if i not in skip]  # partition positions -> file indices
    n_atoms = [index.n_atoms[i] for i in todo]
    part = partition_structures(n_atoms, rank, size)

    def read(which):
        atoms = read_frames(index, which)
        return {i: extract(a, i, settings, path, check_sigma) for a, i in zip(atoms, which)}

    mine = collective(comm, read, [todo[j] for j in part.structures])
    if size > 1:
        position = {i: j for j, i in enumerate(todo)}
        costs = np.zeros(len(todo))
        for part_costs in comm.allgather({i: structure_cost(s.atoms, settings.cutoff) for i, s in mine.items()}):
            for i, c in part_costs.items():
                costs[position[i]] = c
        part = partition_structures(n_atoms, rank, size, costs)
        gained = [todo[j] for j in part.structures if todo[j] not in mine]
        mine.update(collective(comm, read, gained))
    left = f" ({len(skip)} already in the checkpoint)" if skip else ""
    log(f"{len(todo)} structures{left}, {sum(n_atoms)} atoms in {path}; {part.size} rank(s), "
        f"cost imbalance {100 * part.imbalance:.1f}%")
    return [mine[todo[j]] for j in part.structures], part
