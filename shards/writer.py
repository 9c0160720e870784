"""The shard writer: webdataset tars that are either complete and indexed or absent.

Guarantees, and how:
- **Atomic shards.** A shard is written as `.<name>.tmp` in the output directory and renamed to
  its final name only when complete (fsynced); a temp left by a killed writer is deleted on
  start. A reader never sees a partial tar under a shard name.
- **Groups.** Samples arrive in groups (one photo's faces) and a group never straddles two
  shards — rolling happens only between groups — so "this group is in a complete shard" is a
  well-defined fact a producer can resume from.
- **Commit callback.** After a shard is renamed and the index rewritten, `on_commit` receives
  the `meta` of every group in it: the producer marks those inputs done only then, so a
  `kill -9` at any moment loses no group and repeats none.
- **Recovery.** Shards on disk but missing from the index (a kill between rename and index
  write) are indexed on start. Only the newest complete shard (and any such unindexed ones) can
  hold groups whose commit callback did not run; `recover()` returns those shard paths so the
  producer can reconcile its ledger from them.
- **Deterministic bytes.** Fixed member mtime/owner/mode and sample order = arrival order, so
  the same input gives byte-identical tars. Members are the bytes `tarfile` (PAX format) writes,
  built directly, one write per group; an integral mtime is stored as an int (a float one would
  add a PAX header block to every member).
- `index.json` (`{"url", "nsamples", "sha256"}` per shard, wids-compatible) and `stats.json` are
  rewritten atomically after every completed shard.

Naming. A single writer in a directory uses `faces-%06d.tar`, `index.json`, `stats.json`.
Parallel parts (`curate --part K/N`, K 0-based) use the prefix `faces-pKofN`, i.e. shards
`faces-pKofN-%06d.tar`, index `index-pKofN.json` and stats `stats-pKofN.json`, so N writers
never clash in one directory; `facesift shards merge-index DIR` concatenates the
`index-*.json` files (in part order) into `index.json`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import IO, Any, Callable

from facesift.shards.format import SHARD_PATTERN
from facesift.shards.index import INDEX_NAME, read_index, write_index
from facesift.common.atomic import atomic_write_json

log = logging.getLogger(__name__)

DEFAULT_PREFIX = SHARD_PATTERN.split("-%")[0]  # "faces"
FIXED_MTIME = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def part_prefix(part: tuple[int, int] | None, base: str = DEFAULT_PREFIX) -> str:
    """`faces` for a whole run, `faces-pKofN` for part K of N."""
    return base if part is None else f"{base}-p{part[0]}of{part[1]}"


def part_suffix(part: tuple[int, int] | None) -> str:
    """"" or "-pKofN": appended to index/stats/config file stems of a part."""
    return "" if part is None else f"-p{part[0]}of{part[1]}"


class _HashingFile:
    """Write-through wrapper counting bytes and hashing them, so the shard's sha256 costs no re-read."""

    def __init__(self, raw: IO[bytes]):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")


class ShardWriter:
    """Writes groups of samples (dicts with `__key__` and member bytes / json-able values)."""

    def __init__(self, directory: str | Path, prefix: str = DEFAULT_PREFIX, index_name: str = INDEX_NAME,
                 stats_name: str = "stats.json", maxcount: int = 10_000, maxsize: int = 1_000_000_000,
                 mtime: float = FIXED_MTIME, name: str = "faces",
                 on_commit: Callable[[list[Any]], None] | None = None,
                 stats: Callable[[], dict] | None = None, index_extra: dict | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix, self.index_name, self.stats_name = prefix, index_name, stats_name
        # an integral float mtime would cost every member an extra PAX header block (tarfile writes
        # float mtimes as pax records): store it as an int
        mtime = int(mtime) if float(mtime).is_integer() else mtime
        self.maxcount, self.maxsize, self.mtime, self.name = maxcount, maxsize, mtime, name
        self.on_commit, self.stats_fn, self.index_extra = on_commit, stats, index_extra or {}
        self._shard_re = re.compile(rf"^{re.escape(prefix)}-(\d{{6}})\.tar$")
        self._temp_re = re.compile(rf"^\.{re.escape(prefix)}-(\d{{6}})\.tar\.tmp$")
        self.shardlist: list[dict] = []
        self._tar: bool | None = None  # True while a shard is open
        self._file: IO[bytes] | None = None
        self._hash: _HashingFile | None = None
        self._count = 0
        self._groups: list[Any] = []
        self._recovered: list[Path] = []
        self._open_index()

    # -- start-up ----------------------------------------------------------------------------
    def _open_index(self) -> None:
        own_json = re.compile(rf"^\.({re.escape(self.index_name)}|{re.escape(self.stats_name)})\.\w+\.tmp$")
        for p in self.directory.iterdir():
            if self._temp_re.match(p.name):
                log.info("removing incomplete shard %s left by an interrupted run", p.name)
                p.unlink()
            elif own_json.match(p.name):  # an atomic index/stats write cut short
                p.unlink()
        index_path = self.directory / self.index_name
        if index_path.exists():
            self.shardlist = list(read_index(index_path)["shardlist"])
        listed = {e["url"] for e in self.shardlist}
        on_disk = sorted(p.name for p in self.directory.iterdir() if self._shard_re.match(p.name))
        missing = [e["url"] for e in self.shardlist if not (self.directory / e["url"]).exists()]
        if missing:
            log.warning("index %s lists shards that are not on disk: %s", self.index_name, missing[:5])
        unindexed = [n for n in on_disk if n not in listed]
        for n in unindexed:
            from facesift.shards.reader import iter_keys  # webdataset (and torch) only when there is one

            path = self.directory / n
            log.info("indexing shard %s completed by an interrupted run", n)
            self.shardlist.append({"url": n, "nsamples": sum(1 for _ in iter_keys(str(path))),
                                   "sha256": _file_sha256(path)})
        if unindexed:
            self._write_index()
        self._recovered = [self.directory / n for n in unindexed]
        indexed = [e["url"] for e in self.shardlist if e["url"] not in unindexed]
        if indexed and (self.directory / indexed[-1]).exists():
            self._recovered.insert(0, self.directory / indexed[-1])
        numbers = [int(m.group(1)) for m in (self._shard_re.match(Path(e["url"]).name)
                                              for e in self.shardlist) if m]
        numbers += [int(self._shard_re.match(n).group(1)) for n in on_disk]
        self._next = max(numbers, default=-1) + 1

    def recover(self) -> list[Path]:
        """Complete shards whose groups may not have been acknowledged (see module docstring)."""
        return list(self._recovered)

    # -- writing -----------------------------------------------------------------------------
    def _shard_name(self, number: int) -> str:
        return f"{self.prefix}-{number:06d}.tar"

    def _open_shard(self) -> None:
        name = self._shard_name(self._next)
        self._temp_path = self.directory / f".{name}.tmp"
        self._final_path = self.directory / name
        self._file = open(self._temp_path, "wb")
        self._hash = _HashingFile(self._file)
        self._tar = True
        self._count = 0
        self._groups = []

    def _member(self, key: str, ext: str, data: bytes) -> list[bytes]:
        """One tar member as `TarFile.addfile` writes it (PAX header, data, NUL padding to 512), built
        directly: the same bytes without tarfile's per-member copy and stream buffering."""
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size = len(data)
        info.mtime = self.mtime
        info.mode = 0o444
        info.uname = info.gname = "bigdata"
        info.uid = info.gid = 0
        pad = -len(data) % tarfile.BLOCKSIZE
        return [info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"), data, tarfile.NUL * pad]

    def write_group(self, samples: list[dict], meta: Any = None) -> None:
        """Append one group; `meta` is handed to `on_commit` once its shard is complete."""
        encoded = []
        size = 0
        for sample in samples:
            key = sample["__key__"]
            if "." in key or "/" in key:
                raise ValueError(f"sample key {key!r} contains '.' or '/'")
            members = sorted((ext, _encode(v)) for ext, v in sample.items() if not ext.startswith("__"))
            size += sum(512 + len(d) + 511 for _, d in members)
            encoded.append((key, members))
        if self._tar is not None and self._count and (
                self._count + len(encoded) > self.maxcount or self._hash.size + size > self.maxsize):
            self.finish_shard()
        if self._tar is None:
            self._open_shard()
        parts: list[bytes] = []
        for key, members in encoded:
            for ext, data in members:
                parts += self._member(key, ext, data)
        self._hash.write(b"".join(parts))  # one write (and one hash update) per group
        self._count += len(encoded)
        self._groups.append(meta)

    def finish_shard(self) -> Path | None:
        """Complete the open shard: close, fsync, rename, index, commit callback, stats."""
        if self._tar is None:
            return None
        # end-of-archive (two zero blocks), padded to a whole record, exactly as TarFile.close()
        end = 2 * tarfile.BLOCKSIZE
        end += -(self._hash.size + end) % tarfile.RECORDSIZE
        self._hash.write(tarfile.NUL * end)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp_path, self._final_path)
        _fsync_dir(self.directory)
        self.shardlist.append({"url": self._final_path.name, "nsamples": self._count,
                               "sha256": self._hash.sha.hexdigest()})
        self._write_index()
        groups, path = self._groups, self._final_path
        self._tar = self._file = self._hash = None
        self._next += 1
        if self.on_commit is not None:
            self.on_commit(groups)
        self.write_stats()
        log.debug("shard %s complete: %d samples", path.name, self.shardlist[-1]["nsamples"])
        return path

    def _write_index(self) -> None:
        write_index(self.directory, self.shardlist, name=self.name, filename=self.index_name,
                    **self.index_extra)

    def write_stats(self) -> None:
        extra = self.stats_fn() if self.stats_fn else {}
        atomic_write_json(self.directory / self.stats_name, {
            "shards": len(self.shardlist),
            "samples": sum(int(e.get("nsamples") or 0) for e in self.shardlist),
            "bytes": sum((self.directory / e["url"]).stat().st_size for e in self.shardlist
                         if (self.directory / e["url"]).exists()),
            **extra})

    @property
    def pending_groups(self) -> int:
        return len(self._groups) if self._tar is not None else 0

    def close(self) -> None:
        """Complete the open shard (a partial last shard is a normal, complete shard)."""
        self.finish_shard()

    def abort(self) -> None:
        """Drop the open shard without committing (its groups stay un-done and are redone)."""
        if self._tar is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self._temp_path.unlink()
            self._tar = self._file = self._hash = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *rest) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
