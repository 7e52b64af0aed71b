"""The memory a rank may use: the tightest of PARGAP_MEMORY_PER_RANK, Slurm, the cgroup (v2 and v1)
and MemAvailable, read from fake /proc and /sys/fs/cgroup trees."""

import math

import numpy as np
import pytest

from pargap.errors import PargapError
from pargap.memory_limit import cgroup_limit, limit_per_rank, parse_bytes, slurm_limit_per_rank

GiB = 2**30


@pytest.fixture
def machine(tmp_path):
    """A node with 64 GiB available, in cgroup v2 job_1/step_0 whose parent job_1 caps at 8 GiB."""
    (tmp_path / "meminfo").write_text(f"MemTotal: {80 * 2**20} kB\nMemAvailable: {64 * 2**20} kB\n")
    (tmp_path / "cgroup").write_text("0::/job_1/step_0\n")
    step = tmp_path / "sys" / "job_1" / "step_0"
    step.mkdir(parents=True)
    (step / "memory.max").write_text("max\n")
    (step.parent / "memory.max").write_text(f"{8 * GiB}\n")
    return tmp_path


def _limit(machine, ranks, environ):
    return limit_per_rank(ranks, environ, meminfo=machine / "meminfo", cgroup_file=machine / "cgroup",
                          cgroup_root=machine / "sys")


def test_cgroup_v2_limit_of_an_ancestor_is_shared_by_the_ranks_on_the_node(machine):
    assert cgroup_limit(machine / "cgroup", machine / "sys") == 8 * GiB
    assert _limit(machine, 4, {}) == (2 * GiB, "cgroup memory limit / 4 rank(s) on the node")


def test_cgroup_v1_memory_controller(tmp_path):
    (tmp_path / "cgroup").write_text("12:cpu,cpuacct:/slurm/uid_1/job_7\n5:memory:/slurm/uid_1/job_7\n")
    job = tmp_path / "memory" / "slurm" / "uid_1" / "job_7"
    job.mkdir(parents=True)
    (job / "memory.limit_in_bytes").write_text(f"{3 * GiB}\n")
    (job.parent / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_limit(tmp_path / "cgroup", tmp_path) == 3 * GiB
    (job / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_limit(tmp_path / "cgroup", tmp_path) == math.inf


def test_slurm_per_cpu_and_per_node():
    assert slurm_limit_per_rank({"SLURM_MEM_PER_CPU": "2000"}, 64) == 2000 * 2**20
    assert slurm_limit_per_rank({"SLURM_MEM_PER_CPU": "2000", "SLURM_CPUS_PER_TASK": "2"}, 64) == 4000 * 2**20
    assert slurm_limit_per_rank({"SLURM_MEM_PER_NODE": "64000", "SLURM_TASKS_PER_NODE": "32(x4)"}, 1) == 2000 * 2**20
    assert slurm_limit_per_rank({"SLURM_MEM_PER_NODE": "64000"}, 16) == 4000 * 2**20
    assert slurm_limit_per_rank({}, 16) == math.inf


def test_the_tightest_limit_wins_and_the_override_beats_them_all(machine):
    assert _limit(machine, 2, {"SLURM_MEM_PER_CPU": "1024"}) == (GiB, "Slurm")  # below 8 GiB / 2
    assert _limit(machine, 2, {"SLURM_MEM_PER_CPU": "8192"})[0] == 4 * GiB  # the cgroup is tighter
    (machine / "sys" / "job_1" / "memory.max").write_text("max\n")
    assert _limit(machine, 16, {}) == (4 * GiB, "MemAvailable / 16 rank(s) on the node")
    assert _limit(machine, 16, {"PARGAP_MEMORY_PER_RANK": "100G"}) == (100 * GiB, "PARGAP_MEMORY_PER_RANK")
    with pytest.raises(PargapError, match="PARGAP_MEMORY_PER_RANK"):
        _limit(machine, 16, {"PARGAP_MEMORY_PER_RANK": "lots"})


def test_nothing_readable_is_no_limit(tmp_path):
    assert _limit(tmp_path, 1, {})[0] == math.inf
    assert parse_bytes("1.5K") == 1536 and parse_bytes("8e9") == 8e9


def test_the_dry_run_and_auto_share_the_rule(monkeypatch):
    """The plan for P ranks on this node divides the node's memory by P, as the fit on P ranks
    does; auto then picks as choose_solver would."""
    from pargap.fitting.memory import DataSizes, make_plan, planned_memory_per_rank
    from pargap.linalg.solve import auto_solver

    monkeypatch.delenv("PARGAP_MEMORY_PER_RANK", raising=False)
    for key in ("SLURM_MEM_PER_CPU", "SLURM_MEM_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    one, eight = planned_memory_per_rank(1)[0], planned_memory_per_rank(8)[0]
    assert eight == pytest.approx(one / 8, rel=0.05)  # MemAvailable moves a little between the reads
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "1000")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    assert planned_memory_per_rank(64) == (1000 * 2**20, "Slurm")
    sizes = DataSizes(n_atoms=np.full(8, 10.0), n_rows=np.full(8, 31.0), cost=np.ones(8), desc=np.full((1, 8), 10.0),
                      grad=np.full((1, 8), 100.0), dims=[30], n_sparse=[9000], has_soap=True, names=["soap"])
    assert make_plan(sizes, 4).solver == auto_solver(9000, 1000 * 2**20)[0] == "scalapack"
    assert make_plan(sizes, 4, memory_per_rank=8 * GiB).solver == "tsqr"
