"""Reading shards without webdataset's decoding pipeline: keys, chosen members, raw bytes.

`info`, `verify`, `split` and `sample` each need a different slice of a shard — only the tar
headers, only the json members, every byte plus a checksum — and reading a 1 GB shard's jpgs
to count its keys would be wasteful. These readers stream the tar once, hand out only the
members asked for, and skip the rest (seeking past them when the shard is a local file).

A shard that cannot be read to its end — missing, empty, not a tar, cut off, a corrupt header —
raises `DamagedShard` naming it and the reason, never a bare `tarfile` error. tarfile itself
stops *quietly* at a cut-off or garbled header, so the end of every archive is checked: only a
zero block (the end-of-archive marker) is a clean end. Samples are handed out only once they
are known to be complete (the next sample's header, or the marker, was reached after them), so
the samples read before the damage are whole and `DamagedShard.samples` counts them: every
reader, and so every command, agrees on what a damaged shard holds (docs/shards.md, "Damaged
shards").
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
from dataclasses import dataclass
from typing import IO, Callable, Container, Iterator

from facesift.shards.index import local_path

# what a broken archive, a cut-off compressed stream or a failing transport raise while reading
READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, OSError)


class DamagedShard(Exception):
    """A shard that cannot be read to its end: `samples` complete samples came before the damage."""

    def __init__(self, url: str, reason: str, samples: int = 0):
        super().__init__(url, reason, samples)
        self.url, self.reason, self.samples = url, reason, samples

    def __str__(self) -> str:
        return f"{self.url}: {self.reason}"

    def after(self, samples: int) -> "DamagedShard":
        """The same damage, with the number of complete samples read before it."""
        return DamagedShard(self.url, self.reason, samples)


class _EndProbe(tarfile.TarInfo):
    """A TarInfo that records why tarfile stopped reading headers (it does not say otherwise)."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as exc:
            tar.facesift_stop = exc  # type: ignore[attr-defined]
            raise


def _end_problem(tar: tarfile.TarFile) -> str | None:
    """None when the archive ended on a zero block (the end-of-archive marker), else what is wrong."""
    stop = getattr(tar, "facesift_stop", None)
    if stop is None or isinstance(stop, tarfile.EOFHeaderError):
        return None
    if isinstance(stop, tarfile.EmptyHeaderError):
        return f"truncated: the file ends at byte {tar.offset} without the end-of-archive marker"
    if isinstance(stop, tarfile.TruncatedHeaderError):
        return f"truncated: the file ends inside the member header at byte {tar.offset}"
    return f"corrupt member header at byte {tar.offset} ({stop})"


def _read_problem(exc: BaseException, url: str, started: bool) -> str:
    """One readable reason for an error raised while opening or reading a shard."""
    if isinstance(exc, FileNotFoundError):
        return "missing: shard file not found"
    if not started and isinstance(exc, tarfile.ReadError):
        size = shard_nbytes(url)
        return "empty file (0 bytes)" if size == 0 else "not a tar archive"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, tarfile.ReadError) and "unexpected end of data" in text:
        return "truncated: the file ends inside a member's data"
    status = re.search(r"\): exit (\d+)", text)  # webdataset's pipe:/http reader: the command failed
    if status:
        return f"unreadable: its command exited with status {status.group(1)}"
    return f"unreadable: {type(exc).__name__}: {text[:200]}"


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


def _open_stream(url: str, fileobj: IO[bytes] | None) -> tuple[IO[bytes], bool]:
    """(stream, owned): the caller's `fileobj`, else the local file or webdataset's `gopen`."""
    if fileobj is not None:
        return fileobj, False
    path = local_path(url)
    try:
        if path is not None:
            return open(path, "rb"), True
        import webdataset as wds  # only for remote URLs: importing it loads torch (1.2 s of every command's start)
        return wds.gopen(url, "rb"), True
    except READ_ERRORS as exc:
        raise DamagedShard(url, _read_problem(exc, url, started=False)) from None


def iter_members(url: str, fileobj: IO[bytes] | None = None, seekable: bool | None = None,
                 end: dict | None = None) -> Iterator[Member]:
    """Members of one shard in tar order, data read only on demand.

    Local files open in random-access mode so unread members are seeked over; anything else
    (pipe:, http, a `fileobj` such as a HashingReader) streams. webdataset's own ``__*``
    members and directories are skipped. Raises `DamagedShard` when the shard is missing, is
    not a tar, or does not end with the end-of-archive marker (tarfile stops quietly at a
    cut-off header: the probe is how that is told from a complete shard). When `end` is a
    dict, it receives ``offset``: where the end-of-archive marker starts (`shards verify`
    checks that both of its blocks are there).
    """
    if seekable is None:
        seekable = fileobj is None and local_path(url) is not None
    stream, owned = _open_stream(url, fileobj)
    started = False
    try:
        with tarfile.open(fileobj=stream, mode="r:*" if seekable else "r|*", tarinfo=_EndProbe) as tar:
            started = True
            for info in tar:
                if not info.isfile() or info.name.rpartition("/")[2].startswith("__"):
                    continue
                yield Member(_key_of(info.name), _ext_of(info.name), info.size,
                             lambda info=info: _read_member(url, tar, info))
            problem = _end_problem(tar)
            if problem:
                raise DamagedShard(url, problem)
            if end is not None:
                end["offset"] = tar.offset
    except READ_ERRORS as exc:
        raise DamagedShard(url, _read_problem(exc, url, started)) from None
    finally:
        if owned:
            _close_quietly(stream)


def _close_quietly(stream: IO[bytes]) -> None:
    """Close a shard stream; a `pipe:` whose command failed raises here, and the damage (if any)
    has already been reported by then."""
    try:
        stream.close()
    except READ_ERRORS:
        pass


def _read_member(url: str, tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    """One member's bytes; a cut-off member is the shard's damage, not a tarfile traceback."""
    try:
        fh = tar.extractfile(info)
        if fh is None:
            raise tarfile.ReadError(f"{info.name}: not a regular file")
        return fh.read()
    except READ_ERRORS as exc:
        raise DamagedShard(url, _read_problem(exc, url, started=True)) from None


def iter_keys(url: str) -> Iterator[str]:
    """Sample keys of one shard in tar order (local path or any webdataset URL).

    A key is yielded once its sample is complete (the next key's header or the end-of-archive
    marker follows it), so on `DamagedShard` the keys yielded are exactly its `samples`."""
    last, done = None, 0
    try:
        for member in iter_members(url):
            if member.key != last:
                if last is not None:
                    done += 1
                    yield last
                last = member.key
    except DamagedShard as exc:
        raise exc.after(done) from None
    if last is not None:
        yield last


def iter_samples(url: str, extensions: Container[str] | None = None,
                 select: Callable[[str], bool] | None = None) -> Iterator[dict]:
    """Samples of one shard as webdataset-style dicts of raw bytes.

    Only members whose extension is in `extensions` (all when None) are read; when `select`
    is given it is called once per key, in order, and unselected samples are skipped without
    reading their data. Each dict holds ``__key__``, ``__url__`` and ``__sizes__`` (member
    sizes, read or not) besides the chosen members. A sample is yielded once it is complete,
    so a `DamagedShard` (raised after the samples before the damage) never comes with half a
    sample; its `samples` counts the complete ones, selected or not.
    """
    current: dict | None = None
    wanted, done = True, 0
    try:
        for member in iter_members(url):
            if current is None or member.key != current["__key__"]:
                if current is not None:
                    done += 1
                    if wanted:
                        yield current
                current = {"__key__": member.key, "__url__": url, "__sizes__": {}}
                wanted = select(member.key) if select is not None else True
            current["__sizes__"][member.ext] = member.size
            if wanted and (extensions is None or member.ext in extensions):
                current[member.ext] = member.read()
    except DamagedShard as exc:
        raise exc.after(done) from None
    if current is not None and wanted:
        yield current


def shard_nbytes(url: str) -> int | None:
    """Size of a local shard file, None when it is not a local file."""
    path = local_path(url)
    return os.path.getsize(path) if path is not None and os.path.exists(path) else None
