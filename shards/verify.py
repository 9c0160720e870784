"""`shards verify`: prove a shard set is whole before hours of training depend on it.

Each shard is read exactly once: the bytes go through sha256 while the tar is parsed, every
member is decoded (jpg through PIL, json through the json parser) and each sample is checked
for both members. Across shards the checks need everything at once: sha256 and `nsamples`
against `index.json`, shards listed but missing, shards present but unlisted, and keys that
occur twice anywhere. Problems are precise (shard, key, what) so a user can repair or drop
exactly the bad part.
"""
from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from facesift.common.images import SHARD_IMAGE_EXTS
from facesift.shards.format import make_key
from facesift.shards.index import SHARD_GLOB, index_entries, index_location, local_path, shard_urls
from facesift.shards.reader import READ_ERRORS, DamagedShard, HashingReader, iter_members

log = logging.getLogger(__name__)

REQUIRED_MEMBERS = ("jpg", "json")


@dataclass(frozen=True)
class Problem:
    """One thing wrong: which shard, which sample (None for shard-level problems), what."""
    shard: str
    key: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.key}: {self.what}" if self.key else f"{self.shard}: {self.what}"


@dataclass
class ShardCheck:
    """What reading one shard found; `keys` in tar order feed the cross-shard duplicate check."""
    url: str
    keys: list[str] = field(default_factory=list)
    sha256: str | None = None
    nbytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def nsamples(self) -> int:
        return len(self.keys)


@dataclass
class VerifyReport:
    shards: list[ShardCheck]
    problems: list[Problem]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def nsamples(self) -> int:
        return sum(s.nsamples for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        """What `shards verify --json` prints and `--report FILE` writes."""
        return {"ok": self.ok, "shards": len(self.shards), "samples": self.nsamples,
                "problems": [{"shard": p.shard, "key": p.key, "problem": p.what} for p in self.problems],
                "warnings": self.warnings}

    def format_problems(self, limit: int, report_file: str | Path | None = None) -> str:
        """The first `limit` problems, one a line ("" when there are none)."""
        if not self.problems:
            return ""
        lines = [f"{len(self.problems)} problem(s):", *(f"  {p}" for p in self.problems[:limit])]
        if len(self.problems) > limit:
            more = len(self.problems) - limit
            lines.append(f"  ... and {more} more" + (f" (all in {report_file})" if report_file else
                                                     " (--report FILE lists all)"))
        return "\n".join(lines)


def _open(url: str):
    path = local_path(url)
    if path is not None:
        return open(path, "rb")
    import webdataset as wds
    return wds.gopen(url, "rb")


def _check_image(data: bytes, meta: dict | None) -> str | None:
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            size = im.size
    except Exception as exc:  # PIL raises many types for bad data; all mean "does not decode"
        message = re.sub(r" <[^>]*>", "", str(exc))  # drop object reprs: stable, readable text
        return f"image does not decode: {type(exc).__name__}: {message}"
    crop = (meta or {}).get("crop_size")
    if isinstance(crop, int) and size != (crop, crop):
        return f"image is {size[0]}x{size[1]} but json crop_size is {crop}"
    return None


def _finish_sample(url: str, key: str, members: dict[str, bytes | None], required: Sequence[str],
                   decode: bool, problems: list[Problem]) -> None:
    missing = [ext for ext in required if ext not in members]
    if missing:
        problems.append(Problem(url, key, f"missing member(s) {', '.join(missing)} "
                                          f"(has {', '.join(sorted(members)) or 'none'})"))
    meta = None
    if "json" in members and members["json"] is not None:
        try:
            meta = json.loads(members["json"])
            if not isinstance(meta, dict):
                problems.append(Problem(url, key, f"json is a {type(meta).__name__}, not an object"))
                meta = None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(Problem(url, key, f"json does not parse: {exc}"))
    if meta is not None and "photo_id" in meta and isinstance(meta.get("face_index"), int):
        expected = make_key(meta["photo_id"], meta["face_index"])
        if expected != key:
            problems.append(Problem(url, key, f"json describes photo {meta['photo_id']!r} face "
                                              f"{meta['face_index']} (key {expected}), not this sample"))
    if decode:
        for ext, data in members.items():
            if ext in SHARD_IMAGE_EXTS and data is not None:
                error = _check_image(data, meta)
                if error:
                    problems.append(Problem(url, key, f"{ext}: {error}"))


def check_shard(url: str, decode: bool = True, required: Sequence[str] = REQUIRED_MEMBERS) -> ShardCheck:
    """Hash, parse and (optionally) decode one shard; never raises for bad data."""
    result = ShardCheck(url)
    try:
        raw = _open(url)
    except FileNotFoundError:
        result.problems.append(Problem(url, None, "missing: shard file not found"))
        return result
    except OSError as exc:
        result.problems.append(Problem(url, None, f"cannot open: {exc}"))
        return result
    reader = HashingReader(raw)
    seen: set[str] = set()
    key: str | None = None
    members: dict[str, bytes | None] = {}
    end: dict = {}
    try:
        for member in iter_members(url, fileobj=reader, seekable=False, end=end):
            if member.key != key:
                if key is not None:
                    _finish_sample(url, key, members, required, decode, result.problems)
                key, members = member.key, {}
                if key in seen:
                    result.problems.append(Problem(url, key, "duplicate key within the shard "
                                                             "(its members are not contiguous or repeat)"))
                else:
                    result.keys.append(key)
                    seen.add(key)
            if member.ext in members:
                result.problems.append(Problem(url, key, f"member .{member.ext} appears twice"))
            wanted = member.ext == "json" or (decode and member.ext in SHARD_IMAGE_EXTS)
            members[member.ext] = member.read() if wanted else None
        if key is not None:
            _finish_sample(url, key, members, required, decode, result.problems)
        reader.drain()
        result.sha256 = reader.hexdigest()
        if reader.nbytes < end.get("offset", 0) + 2 * tarfile.BLOCKSIZE:
            where = f"after sample {key}" if key else "at the start"
            result.problems.append(Problem(url, None, f"truncated tar: it ends {where} without the "
                                                      "end-of-archive marker"))
    except DamagedShard as exc:
        where = f"after sample {key}" if key else "at the start"
        result.problems.append(Problem(url, None, f"unreadable tar {where}: {exc.reason}"))
    except READ_ERRORS as exc:  # the digest's drain of a stream whose transport fails
        where = f"after sample {key}" if key else "at the start"
        result.problems.append(Problem(url, None, f"unreadable tar {where}: {type(exc).__name__}: {exc}"))
    finally:
        reader.close()
    result.nbytes = reader.nbytes
    return result


def index_entries_of(spec: Any) -> list[tuple[str, str, dict]] | None:
    """[(index location, resolved url, entry)] when `spec` names an index (local or remote) or
    a directory holding one.

    A directory with per-part indexes (`index-pKofN.json`) but no merged `index.json` yet is
    checked against all its parts, so a scaled-out run can be verified before merging.
    """
    location = index_location(spec)
    if location is not None:
        locations = [location]
    else:
        path = Path(local_path(str(spec)) or str(spec)) if isinstance(spec, (str, Path)) else None
        if path is None or not path.is_dir():
            return None
        from facesift.shards.merge import PART_INDEX_GLOB, natural_order
        locations = [str(p) for p in sorted(path.glob(PART_INDEX_GLOB), key=natural_order)]
    if not locations:
        return None
    return [(loc, url, entry) for loc in locations for url, entry in index_entries(loc)]


def _check_against_index(checks: list[ShardCheck], entries: list[tuple[str, str, dict]],
                         problems: list[Problem], warnings: list[str]) -> None:
    by_url = {c.url: c for c in checks}
    no_sha = 0
    for location, url, entry in entries:
        index_name = location.rstrip("/ -").rsplit("/", 1)[-1]
        check = by_url[url]
        if any(p.what.startswith(("missing:", "cannot open")) for p in check.problems):
            continue
        expected = entry.get("sha256")
        if not expected:
            no_sha += 1
        elif check.sha256 and check.sha256 != expected:
            problems.append(Problem(url, None, f"sha256 {check.sha256[:16]}... does not match "
                                               f"{index_name} ({expected[:16]}...): the shard changed"))
        expected_n = entry.get("nsamples")
        if expected_n is not None and check.sha256 and int(expected_n) != check.nsamples:
            problems.append(Problem(url, None, f"has {check.nsamples} samples, "
                                               f"{index_name} says {expected_n}"))
    if no_sha:
        warnings.append(f"{no_sha} shard(s) have no sha256 in their index: their bytes were not checked")
    listed = {str(Path(u).resolve()) for _, u, _ in entries if local_path(u) is not None}
    prefixes = {_shard_prefix(Path(u).name) for u in listed}
    local = [Path(loc) for loc, _, _ in entries if local_path(loc) is not None]
    for directory in sorted({p.parent for p in local}):  # stale shards can only be listed locally
        names = ", ".join(sorted({p.name for p in local if p.parent == directory}))
        for tar in sorted(directory.glob(SHARD_GLOB)):
            if str(tar.resolve()) not in listed and _shard_prefix(tar.name) in prefixes:
                problems.append(Problem(str(tar), None, f"not listed in {names}: the index is stale "
                                                        "or the shard is a leftover"))


def _shard_prefix(name: str) -> str:
    """`faces` of faces-000012.tar, `faces-p1of4` of faces-p1of4-000003.tar: a writer's series."""
    return re.sub(r"-?\d+\.tar$", "", name)


def _duplicates(checks: Iterable[ShardCheck]) -> Iterator[Problem]:
    first: dict[str, str] = {}
    for check in checks:
        for key in check.keys:
            if key in first:
                yield Problem(check.url, key, f"duplicate key: also in {first[key]}")
            else:
                first[key] = check.url


def verify(spec: Any, workers: int = 1, decode: bool = True, progress: bool = True,
           required: Sequence[str] = REQUIRED_MEMBERS) -> VerifyReport:
    """Check every shard of `spec` (any shard spec); problems come back in index order."""
    from facesift.common.progress import progress as progress_bar

    entries = index_entries_of(spec)
    urls = [u for _, u, _ in entries] if entries else shard_urls(spec)
    warnings: list[str] = []
    if not entries:
        warnings.append("no index.json given: sha256 and sample counts were not checked")
    checks: list[ShardCheck] = []
    bar = progress_bar(total=len(urls), unit="shard", desc="verify", disable=not progress)
    nbad = 0

    def _done(check: ShardCheck) -> None:
        nonlocal nbad
        checks.append(check)
        nbad += len(check.problems)
        bar.update(1)
        bar.set_postfix(samples=sum(c.nsamples for c in checks), problems=nbad, refresh=False)

    try:
        if workers <= 1 or len(urls) <= 1:
            for url in urls:
                _done(check_shard(url, decode, required))
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(urls))) as pool:
                futures = [pool.submit(check_shard, url, decode, tuple(required)) for url in urls]
                for future in as_completed(futures):
                    _done(future.result())
    finally:
        bar.close()
    order = {url: i for i, url in enumerate(urls)}
    checks.sort(key=lambda c: order[c.url])
    problems = [p for c in checks for p in c.problems]
    if entries:
        _check_against_index(checks, entries, problems, warnings)
    problems.extend(_duplicates(checks))
    return VerifyReport(checks, problems, warnings)
