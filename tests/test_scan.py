"""The training file scanned and hashed in byte ranges by 1 to 7 ranks: the same frame index as
the serial scan, and a hash that is a function of the bytes only."""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_job
from pargap.data.frames import scan_frames

HERE = Path(__file__).resolve().parent


def xyz(tmp_path):
    """Frames of 1 to 40 atoms; blank lines between some; a comment line that is a lone integer
    (which a range's first-guess of a frame start may take for an atom count)."""
    rng = np.random.default_rng(0)
    lines = []
    for f in range(60):
        n = int(rng.integers(1, 40))
        lines.append(f"{n}")
        lines.append("7" if f == 31 else f'Lattice="9 0 0 0 9 0 0 0 9" Properties=species:S:1:pos:R:3 energy={-f}.5')
        lines += [f"Si {x:.6f} {y:.6f} {z:.6f}" for x, y, z in rng.uniform(0, 9, (n, 3))]
        if f % 9 == 4:
            lines.append("")
    path = tmp_path / "db.xyz"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("ranks", [1, 2, 3, 7])
def test_index_and_hash_for_any_rank_count(tmp_path, ranks):
    path = xyz(tmp_path)
    serial = scan_frames(str(path))
    block = 1000  # small blocks: the hash list of section "Hash", 7+ blocks
    run = run_job(["mpirun", "-n", str(ranks), "--oversubscribe", sys.executable, HERE / "mpi" / "scan_ranks.py",
                   path, tmp_path / "out.npz", block], timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert got["counts"].tolist() == list(serial.n_atoms) and got["offsets"].tolist() == list(serial.offsets)
    data = path.read_bytes()
    blocks = b"".join(hashlib.sha256(data[i:i + block]).digest() for i in range(0, len(data), block))
    assert str(got["digest"]) == hashlib.sha256(blocks).hexdigest()


def test_wrong_first_guess_falls_back_to_the_serial_scan(tmp_path):
    """Two ranks, the byte midpoint inside frame 1's atom-count line: rank 1's first guess of a
    frame start is frame 1's comment line, a lone integer. Its range does not chain to rank 0's,
    and the index is still the serial scan's."""
    from pargap.data.frames import next_count_line

    second = "12\n5\n" + "".join(f"Si {i}.0 0.0 0.0\n" for i in range(12))
    for pad in range(400):
        first = f'1\nLattice="9 0 0 0 9 0 0 0 9" Properties=species:S:1:pos:R:3 note={"x" * pad}\nSi 0 0 0\n'
        middle = (len(first) + len(second)) // 2
        if len(first) < middle < len(first) + 3:
            break
    path = tmp_path / "db.xyz"
    path.write_text(first + second)
    assert next_count_line(str(path), middle) == len(first) + 3  # the comment line "5"
    run = run_job(["mpirun", "-n", "2", "--oversubscribe", sys.executable, HERE / "mpi" / "scan_ranks.py",
                   path, tmp_path / "out.npz", 1 << 20], timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert got["counts"].tolist() == [1, 12] and got["offsets"].tolist() == [0, len(first)]


def test_small_file_hash_is_its_sha256(tmp_path):
    from pargap.fitting.scan import data_hash
    from pargap.parallel import SerialComm

    path = xyz(tmp_path)
    assert data_hash(SerialComm(), str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
