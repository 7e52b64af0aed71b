#!/usr/bin/env python3
"""Local plain copies of the training files the examples and benchmarks read.

    python examples/fetch.py NAME [NAME ...]    # prints one local path per NAME
    python examples/fetch.py --list             # the known NAMEs

NAME is a file's path in the data layout, e.g. ``zuo2020_mlip_benchmark/Si_train.xyz``; every NAME
and the SHA-256 of its plain file are listed in ``examples/data/SHA256SUMS`` (provenance and
licences in ``examples/data/README.md`` and ``tests/data/README.md``). First match wins:

1. ``DATA_DIR`` is set: ``$DATA_DIR/NAME`` as it is (the user's own copy, not checksummed).
2. A plain copy in the repository, ``tests/data/NAME`` (small files the tests read too).
3. The cache, ``$PARGAP_DATA_CACHE/NAME`` (default ``examples/data/cache/``), if its SHA-256 matches.
4. ``examples/data/NAME.xz`` decompressed into the cache, or, for data not in the repository, a
   download from the pinned URL in :data:`REMOTE`; either is checked against the expected SHA-256
   before it is moved into place, so a failed or wrong copy never looks like data.

Plain files are needed because pargap's XYZ reader indexes byte offsets. Standard library only, so
it runs before ``bin/setup``.
"""

import argparse
import hashlib
import lzma
import os
import shutil
import sys
import tempfile
import urllib.error
from pathlib import Path
from urllib.request import urlopen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUMS = HERE / "data" / "SHA256SUMS"
COMPRESSED = HERE / "data"
PLAIN = ROOT / "tests" / "data"
DEFAULT_CACHE = HERE / "data" / "cache"

# Data whose licence does not let it ship here: pinned to a repository and commit.
REMOTE = {
    "w_gap_szlachta2014_partial/GAP_2.xyz":
        "https://raw.githubusercontent.com/libAtoms/abcd/84366f96cc9a3dfa7707dbe4b6194759b7f082e0/"
        "tutorials/data/GAP_2.xyz",
}


class FetchError(Exception):
    """A data file that cannot be provided; the message names the file, source and checksum."""


def expected_sums(path=SUMS):
    """NAME -> SHA-256 (hex) of the plain file, from a ``sha256sum`` listing."""
    sums = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir():
    return Path(os.environ.get("PARGAP_DATA_CACHE") or DEFAULT_CACHE)


def fetch(name, sums=None, remote=None):
    """Path of a local plain copy of data file ``name`` (see the module docstring for the order)."""
    if os.environ.get("DATA_DIR"):
        path = Path(os.environ["DATA_DIR"]) / name
        if not path.is_file():
            raise FetchError(f"{path}: no such file (DATA_DIR={os.environ['DATA_DIR']}, data file {name})")
        return path
    sums = expected_sums() if sums is None else sums
    remote = REMOTE if remote is None else remote
    if name not in sums:
        raise FetchError(f"unknown data file {name!r}: not listed in {SUMS} (fetch.py --list shows the known ones)")
    digest = sums[name]
    if (PLAIN / name).is_file():
        _check(PLAIN / name, name, digest)
        return PLAIN / name
    target = cache_dir() / name
    if target.is_file() and sha256(target) == digest:
        return target
    if (COMPRESSED / f"{name}.xz").is_file():
        source = COMPRESSED / f"{name}.xz"
        _install(target, name, digest, source, lambda out: _decompress(source, out))
    elif name in remote:
        _install(target, name, digest, remote[name], lambda out: _download(remote[name], out, name, digest, target))
    else:
        raise FetchError(f"{name}: neither {COMPRESSED / name}.xz nor a download URL exists")
    return target


def _check(path, name, digest):
    got = sha256(path)
    if got != digest:
        raise FetchError(f"{path}: SHA-256 {got} is not the expected {digest} of {name}")


def _install(target, name, digest, source, write):
    """Write ``target`` through a temporary file in its folder; move it into place only if its
    checksum is right."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        got = sha256(tmp)
        if got != digest:
            raise FetchError(f"{source}: SHA-256 of {name} is {got}, expected {digest}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _decompress(source, out):
    with lzma.open(source) as f:
        shutil.copyfileobj(f, out, 1 << 20)


def _download(url, out, name, digest, target):
    try:
        with urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as err:
        raise FetchError(
            f"cannot download {name} from {url} ({getattr(err, 'reason', err)}); expected SHA-256 {digest}. "
            f"Offline: copy the file to {target}, or set DATA_DIR to a folder that holds {name}") from err


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME", help="data file, e.g. zuo2020_mlip_benchmark/Si_train.xyz")
    p.add_argument("--list", action="store_true", help="print the known NAMEs and where each comes from")
    args = p.parse_args(argv)
    try:
        if args.list:
            for name in sorted(expected_sums()):
                where = ("tests/data" if (PLAIN / name).is_file() else "examples/data (xz)"
                         if (COMPRESSED / f"{name}.xz").is_file() else REMOTE.get(name, "?"))
                print(f"{name}\t{where}")
        for name in args.names:
            print(fetch(name))
    except FetchError as err:
        sys.exit(f"fetch.py: error: {err}")


if __name__ == "__main__":
    main()
