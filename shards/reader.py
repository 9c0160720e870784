"""Reading shards without webdataset's decoding pipeline: keys, chosen members, raw bytes.

`info`, `verify`, `split` and `sample` each need a different slice of a shard — only the tar
headers, only the json members, every byte plus a checksum — and reading a 1 GB shard's jpgs
to count its keys would be wasteful. These readers stream the tar once, hand out only the
members asked for, and skip the rest (seeking past them when the shard is a local file).
"""
from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from typing import IO, Callable, Container, Iterator

import webdataset as wds

from facesift.shards.index import local_path


def _key_of(member_name: str) -> str:
    """webdataset's rule: the key is everything before the first dot of the basename's path."""
    directory, _, base = member_name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{directory}/{stem}" if directory else stem


def _ext_of(member_name: str) -> str:
    base = member_name.rpartition("/")[2]
    return base.split(".", 1)[1] if "." in base else ""


class HashingReader:
    """A read-only file wrapper that feeds every byte read through sha256 (one pass: hash + parse)."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        self.nbytes += len(data)
        return data

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read to the end so the digest covers the whole file (tar padding included)."""
        while self.read(chunk):
            pass

    def hexdigest(self) -> str:
        return self.sha.hexdigest()

    def close(self) -> None:
        self.raw.close()


@dataclass
class Member:
    """One tar member; `read()` returns its bytes and must be called before the next member."""
    key: str
    ext: str
    size: int
    read: Callable[[], bytes]


def iter_members(url: str, fileobj: IO[bytes] | None = None, seekable: bool | None = None,
                 end: dict | None = None) -> Iterator[Member]:
    """Members of one shard in tar order, data read only on demand.

    Local files open in random-access mode so unread members are seeked over; anything else
    (pipe:, http, a `fileobj` such as a HashingReader) streams. webdataset's own ``__*``
    members and directories are skipped. When `end` is a dict, it receives ``offset``: where
    the end-of-archive marker should start (tarfile stops quietly at a truncated header, so
    only a caller that knows the file's length can tell a cut-off shard from a complete one).
    """
    path = local_path(url) if fileobj is None else None
    if seekable is None:
        seekable = path is not None
    if fileobj is not None:
        stream, owned = fileobj, False
    elif path is not None:
        stream, owned = open(path, "rb"), True
    else:
        stream, owned = wds.gopen(url, "rb"), True
    try:
        with tarfile.open(fileobj=stream, mode="r:*" if seekable else "r|*") as tar:
            for info in tar:
                if not info.isfile() or info.name.rpartition("/")[2].startswith("__"):
                    continue
                yield Member(_key_of(info.name), _ext_of(info.name), info.size,
                             lambda info=info: _read_member(tar, info))
            if end is not None:
                end["offset"] = tar.offset
    finally:
        if owned:
            stream.close()


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(info)
    if fh is None:
        raise tarfile.ReadError(f"{info.name}: not a regular file")
    return fh.read()


def iter_keys(url: str) -> Iterator[str]:
    """Sample keys of one shard in tar order (local path or any webdataset URL)."""
    last = None
    for member in iter_members(url):
        if member.key != last:
            yield member.key
            last = member.key


def iter_samples(url: str, extensions: Container[str] | None = None,
                 select: Callable[[str], bool] | None = None) -> Iterator[dict]:
    """Samples of one shard as webdataset-style dicts of raw bytes.

    Only members whose extension is in `extensions` (all when None) are read; when `select`
    is given it is called once per key, in order, and unselected samples are skipped without
    reading their data. Each dict holds ``__key__``, ``__url__`` and ``__sizes__`` (member
    sizes, read or not) besides the chosen members.
    """
    current: dict | None = None
    wanted = True
    for member in iter_members(url):
        if current is None or member.key != current["__key__"]:
            if current is not None and wanted:
                yield current
            current = {"__key__": member.key, "__url__": url, "__sizes__": {}}
            wanted = select(member.key) if select is not None else True
        current["__sizes__"][member.ext] = member.size
        if wanted and (extensions is None or member.ext in extensions):
            current[member.ext] = member.read()
    if current is not None and wanted:
        yield current


def shard_nbytes(url: str) -> int | None:
    """Size of a local shard file, None when it is not a local file."""
    path = local_path(url)
    return os.path.getsize(path) if path is not None and os.path.exists(path) else None
