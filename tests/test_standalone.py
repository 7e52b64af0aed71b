"""The repository stands alone: no file reaches outside it for data, and examples/fetch.py gives
every data file with the checksum it promises, or fails naming the URL and checksum."""

import hashlib
import importlib.util
import lzma
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("pargap", "tests", "examples", "bench", "bin")
# spelled in two pieces so that this file does not match itself
OUTSIDE = ("../" + "shared", "shared" + "/data")
TEXT = {"", ".py", ".sh", ".md", ".toml", ".txt", ".cfg", ".ini", ".yaml", ".yml", ".json"}
SKIP = {".venv", "__pycache__", "cache"}

_spec = importlib.util.spec_from_file_location("examples_fetch", ROOT / "examples" / "fetch.py")
fetch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.setenv("PARGAP_DATA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_no_file_refers_outside_the_repository():
    offenders = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if not path.is_file() or path.suffix not in TEXT or SKIP & set(path.relative_to(ROOT).parts):
                continue
            text = path.read_text(errors="replace")
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                          if any(s in line for s in OUTSIDE)]
    assert not offenders, "files referring outside the repository: " + ", ".join(offenders)


def test_every_data_file_in_the_repository_matches_its_checksum(cache):
    sums = fetch.expected_sums()
    assert len(sums) == 22
    for name, digest in sums.items():
        if name in fetch.REMOTE:
            continue
        path = fetch.fetch(name)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        assert path.is_relative_to(cache) or path.is_relative_to(ROOT / "tests" / "data"), path
    assert set(fetch.REMOTE) <= set(sums)


def test_a_corrupted_cache_file_is_replaced(cache):
    name = "ta_snap_thompson2015/Ta_train.xyz"
    path = fetch.fetch(name)
    good = path.read_bytes()
    path.write_bytes(good[:-100])
    assert fetch.fetch(name) == path and path.read_bytes() == good
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_wrong_checksum_is_refused_and_nothing_is_installed(cache):
    name = "ta_snap_thompson2015/Ta_train.xyz"
    sums = fetch.expected_sums() | {name: "0" * 64}
    with pytest.raises(fetch.FetchError, match="0{64}"):
        fetch.fetch(name, sums=sums)
    assert not (cache / name).exists() and not list((cache / name).parent.iterdir())


def test_download_is_checked(tmp_path, cache):
    """A file:// URL stands in for the network: right content accepted, wrong content refused."""
    upstream = tmp_path / "upstream.xyz"
    upstream.write_text("1\n\nH 0 0 0\n")
    digest = hashlib.sha256(upstream.read_bytes()).hexdigest()
    remote = {"remote/H.xyz": upstream.as_uri()}
    assert fetch.fetch("remote/H.xyz", sums={"remote/H.xyz": digest}, remote=remote).read_bytes() == upstream.read_bytes()
    with pytest.raises(fetch.FetchError, match=f"expected {'1' * 64}"):
        fetch.fetch("remote/other.xyz", sums={"remote/other.xyz": "1" * 64}, remote={"remote/other.xyz": upstream.as_uri()})
    assert not (cache / "remote" / "other.xyz").exists()


def test_offline_error_names_the_url_and_checksum(cache, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fetch, "urlopen", offline)
    name = "w_gap_szlachta2014_partial/GAP_2.xyz"
    digest = fetch.expected_sums()[name]
    with pytest.raises(fetch.FetchError) as err:
        fetch.fetch(name)
    assert fetch.REMOTE[name] in str(err.value) and digest in str(err.value)
    assert "84366f96cc9a3dfa7707dbe4b6194759b7f082e0" in fetch.REMOTE[name]  # pinned to a commit
    assert not (cache / name).exists()


def test_data_dir_overrides(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x.xyz").write_text("mine")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert fetch.fetch("mine/x.xyz") == tmp_path / "mine" / "x.xyz"
    with pytest.raises(fetch.FetchError, match="missing.xyz"):
        fetch.fetch("mine/missing.xyz")


def test_command_line_prints_a_plain_path_or_fails_with_exit_1(cache):
    name = "zuo2020_mlip_benchmark/Si_train.xyz"
    out = subprocess.run([sys.executable, ROOT / "examples" / "fetch.py", name], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.read_bytes() == lzma.decompress((ROOT / "examples" / "data" / f"{name}.xz").read_bytes())
    bad = subprocess.run([sys.executable, ROOT / "examples" / "fetch.py", "no/such.xyz"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no/such.xyz" in bad.stderr
