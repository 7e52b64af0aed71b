"""Per-phase wall time and peak memory of every rank, logged on rank 0."""

import resource
import sys
import time
from contextlib import contextmanager


def peak_memory_mb():
    """Peak resident memory of this process so far (MB): the value after a phase is the peak up to
    the end of that phase, not of the phase alone.

    Read from VmHWM in /proc/self/status, the high-water mark of this process's own address space.
    getrusage's ru_maxrss is only the fallback (not Linux): Linux carries into it, at exec, the peak
    of the process that forked, so a fit started by a large Python process (a test runner, a
    workflow manager) would report that process's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Log:
    """Progress messages, printed by rank 0 only and flushed at once (batch logs show them live).

    ``verbosity``: gap_fit's levels. NORMAL prints ``log(message)``; VERBOSE, NERD and ANALYSIS
    also print ``log.verbose(message)`` (per-model details). ``quiet`` prints nothing."""

    LEVELS = {"NORMAL": 1, "VERBOSE": 2, "NERD": 2, "ANALYSIS": 2}

    def __init__(self, comm, stream=None, quiet=False, verbosity="NORMAL"):
        self.rank = comm.Get_rank()
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.level = self.LEVELS[verbosity.upper()]

    def __call__(self, message):
        if self.rank == 0 and not self.quiet:
            print(f"[pargap] {message}", file=self.stream, flush=True)

    def verbose(self, message):
        """A detail printed at verbosity VERBOSE and above."""
        if self.level >= 2:
            self(message)


class PhaseTimer:
    """``with timer.phase("descriptors"):`` times a phase (max over ranks) and records the peak
    memory of every rank so far (max over ranks, and their sum: an upper bound of the job's peak),
    and how much the phase raised it (max over ranks; 0 if an earlier phase peaked higher).

    The report after each phase is collective: every rank must enter every phase."""

    def __init__(self, comm, log):
        self.comm = comm
        self.log = log
        self.phases = []  # (name, seconds max over ranks, peak MB max, peak MB sum, peak raised MB max)

    @contextmanager
    def phase(self, name):
        start = time.perf_counter()
        before = peak_memory_mb()
        yield
        elapsed = time.perf_counter() - start
        after = peak_memory_mb()
        stats = self.comm.allgather((elapsed, after, after - before))
        t_max = max(s[0] for s in stats)
        m_max = max(s[1] for s in stats)
        m_sum = sum(s[1] for s in stats)
        raised = max(s[2] for s in stats)
        self.phases.append((name, t_max, m_max, m_sum, raised))
        self.log(f"{name:<16s} {t_max:9.3f} s   peak memory per rank max {m_max:8.1f} MB, sum {m_sum:8.1f} MB, "
                 f"raised by {raised:.1f} MB")

    def summary(self):
        total = sum(p[1] for p in self.phases)
        return {"phases": {p[0]: {"seconds": p[1], "peak_mb_max": p[2], "peak_mb_sum": p[3], "peak_raised_mb_max": p[4]}
                           for p in self.phases},
                "total_seconds": total}
