"""The memory one rank may use (bytes): the tightest of the limits that apply to it.

    PARGAP_MEMORY_PER_RANK        set by the user (bytes, or with a K, M, G or T suffix): wins
    Slurm                         SLURM_MEM_PER_CPU x cpus per task, or SLURM_MEM_PER_NODE / tasks
                                  on the node (megabytes, as Slurm exports them)
    cgroup                        memory.max (v2) or memory.limit_in_bytes (v1) of this process's
                                  cgroup and its ancestors, shared by the ranks on the node
    MemAvailable                  of /proc/meminfo, shared by the ranks on the node

A batch system kills a job at its cgroup or Slurm limit whatever MemAvailable says, so all are
read and the smallest is used. One function, :func:`limit_per_rank`, serves the ``auto`` solver
choice and the default row block at run time and the memory plan (``--dry-run``).
"""

import math
import os
from pathlib import Path

from pargap.errors import PargapError

UNLIMITED = 2**60
"""cgroup v1 reports no limit as a huge number (page-rounded 2^63 - 1): anything above is none."""


def parse_bytes(text, name="PARGAP_MEMORY_PER_RANK"):
    """'8e9', '2G', '512M', '1.5T' -> bytes (K, M, G, T powers of 1024)."""
    text = str(text).strip().upper().removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    try:
        return float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise PargapError(f"{name}: cannot read '{text}' as bytes (e.g. 4G, 512M, 8e9)") from None


def available_memory(meminfo="/proc/meminfo"):
    """MemAvailable of /proc/meminfo in bytes (inf where it cannot be read)."""
    try:
        with open(meminfo) as fh:
            return next(float(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return math.inf


def cgroup_limit(cgroup_file="/proc/self/cgroup", root="/sys/fs/cgroup"):
    """The memory limit (bytes) of this process's cgroup: the smallest memory.max (v2) or
    memory.limit_in_bytes (v1) of its cgroup and the ancestors below ``root``; inf if none."""
    try:
        lines = Path(cgroup_file).read_text().splitlines()
    except OSError:
        return math.inf
    root = Path(root)
    candidates = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2 unified hierarchy
            candidates.append((root, path, "memory.max"))
        elif "memory" in controllers.split(","):  # v1 memory controller
            candidates.append((root / "memory", path, "memory.limit_in_bytes"))
    limit = math.inf
    for base, path, name in candidates:
        folder = base / path.lstrip("/")
        while True:
            limit = min(limit, _read_limit(folder / name))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return limit


def _read_limit(path):
    try:
        text = path.read_text().strip()
    except OSError:
        return math.inf
    if text in ("", "max"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        return math.inf
    return math.inf if value >= UNLIMITED else value


def slurm_limit_per_rank(environ, ranks_on_node):
    """Bytes per rank granted by Slurm (--mem-per-cpu or --mem), inf outside Slurm."""
    mb = 2**20
    if environ.get("SLURM_MEM_PER_CPU"):
        cpus = _first_int(environ.get("SLURM_CPUS_PER_TASK")) or 1
        return float(environ["SLURM_MEM_PER_CPU"]) * mb * cpus
    if environ.get("SLURM_MEM_PER_NODE"):
        tasks = (_first_int(environ.get("SLURM_NTASKS_PER_NODE")) or _first_int(environ.get("SLURM_TASKS_PER_NODE"))
                 or ranks_on_node)
        return float(environ["SLURM_MEM_PER_NODE"]) * mb / max(tasks, 1)
    return math.inf


def _first_int(text):
    """'4', '4(x2),3' -> 4; None or '' -> None."""
    if not text:
        return None
    digits = ""
    for c in str(text):
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else None


def slurm_tasks_per_node(environ=None):
    """Tasks per node of the Slurm job (the largest), or None outside Slurm."""
    environ = os.environ if environ is None else environ
    return _first_int(environ.get("SLURM_NTASKS_PER_NODE")) or _first_int(environ.get("SLURM_TASKS_PER_NODE"))


def limit_per_rank(ranks_on_node, environ=None, meminfo="/proc/meminfo", cgroup_file="/proc/self/cgroup",
                   cgroup_root="/sys/fs/cgroup"):
    """(bytes one rank may use, where that figure comes from) for ``ranks_on_node`` ranks sharing
    this node's memory (see the module docstring). inf if nothing can be read."""
    environ = os.environ if environ is None else environ
    ranks_on_node = max(int(ranks_on_node), 1)
    if environ.get("PARGAP_MEMORY_PER_RANK"):
        return parse_bytes(environ["PARGAP_MEMORY_PER_RANK"]), "PARGAP_MEMORY_PER_RANK"
    limits = {
        "Slurm": slurm_limit_per_rank(environ, ranks_on_node),
        "cgroup memory limit": cgroup_limit(cgroup_file, cgroup_root) / ranks_on_node,
        "MemAvailable": available_memory(meminfo) / ranks_on_node,
    }
    source = min(limits, key=limits.get)
    return limits[source], f"{source} / {ranks_on_node} rank(s) on the node" if source != "Slurm" else source
