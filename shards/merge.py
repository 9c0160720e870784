"""`shards merge-index`: one `index.json` from the per-part indexes of a split-up curate run.

`curate --part K/N` lets N processes or machines write disjoint shard ranges, each with its own
index. Consumers want one list, so the parts are concatenated in part order (index order stays
reproducible) after checking that no shard is listed twice and every listed local shard
exists; the result is written atomically next to the shards.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

from facesift.shards.index import INDEX_NAME, local_path, read_index

log = logging.getLogger(__name__)
PART_INDEX_GLOB = "index-*.json"
_PART_NAME = re.compile(r"-p(\d+)of(\d+)\.json$")  # index-pKofN.json, K 0-based (shards/writer.py)


def missing_parts(paths: Sequence[str | Path]) -> list[str]:
    """Parts absent from a set named `index-pKofN.json`: merging those would silently drop data."""
    found: dict[int, set[int]] = {}
    for path in paths:
        match = _PART_NAME.search(Path(path).name)
        if match:
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if len(found) > 1:
        return [f"parts of different splits are mixed: of{sorted(found)}"]
    return [f"p{k}of{n}" for n, ks in found.items() for k in range(n) if k not in ks]


def natural_order(path: Path) -> list:
    """index-2-of-10 before index-10-of-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_part_indexes(directory: str | Path, pattern: str = PART_INDEX_GLOB) -> list[Path]:
    """Part indexes in `directory`, in natural name order (the order their parts were numbered)."""
    directory = Path(directory)
    found = sorted((p for p in directory.glob(pattern) if p.name != INDEX_NAME), key=natural_order)
    if not found:
        raise FileNotFoundError(f"{directory}: no part indexes matching {pattern!r}")
    return found


def _rebase(url: str, source_dir: Path, target_dir: Path) -> str:
    """A part's url as the merged index should hold it: relative to the merged index when local."""
    path = local_path(url)
    if path is None:
        return url
    absolute = Path(path) if os.path.isabs(path) else (source_dir / path)
    absolute = Path(os.path.normpath(absolute))
    try:
        return os.path.relpath(absolute, target_dir)
    except ValueError:  # different drive on Windows
        return str(absolute)


def merge_indexes(paths: Sequence[str | Path], out: str | Path, name: str | None = None,
                  check_files: bool = True, allow_partial: bool = False) -> dict[str, Any]:
    """Concatenate part indexes into `out` (an index.json path); raise ValueError on any conflict.

    Conflicts: a shard listed twice, a listed local shard that does not exist, and (unless
    `allow_partial`) a gap in a `-pKofN` part set.
    """
    out = Path(out)
    target_dir = out.parent.resolve()
    shardlist: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    names: set[str] = set()
    owner: dict[str, Path] = {}
    problems: list[str] = []
    gaps = missing_parts(paths)
    if gaps and not allow_partial:
        problems.append(f"part index(es) missing: {', '.join(gaps)} (finish those parts, or "
                        "pass --allow-partial to index what exists)")
    for path in map(Path, paths):
        if path.resolve() == out.resolve():
            raise ValueError(f"{path} is the output index itself; give the part indexes only")
        index = read_index(path)
        if index.get("name"):
            names.add(index["name"])
        source_dir = path.parent.resolve()
        count = 0
        for entry in index["shardlist"]:
            url = _rebase(entry["url"], source_dir, target_dir)
            if url in owner:
                problems.append(f"shard {url} is listed by both {owner[url]} and {path}")
                continue
            owner[url] = path
            local = local_path(url)
            if check_files and local is not None and not (target_dir / local).exists():
                problems.append(f"shard {url} (from {path}) does not exist")
            shardlist.append({**entry, "url": url})
            count += int(entry.get("nsamples") or 0)
        parts.append({"index": _rebase(str(path.resolve()), target_dir, target_dir),
                      "shards": len(index["shardlist"]), "nsamples": count,
                      **({"part": index["part"]} if "part" in index else {})})
    if problems:
        raise ValueError("cannot merge:\n  " + "\n  ".join(problems))
    if len(names) > 1 and name is None:
        log.warning("parts have different names %s; using %r", sorted(names), sorted(names)[0])
    merged = {"wids_version": 1, "name": name or (sorted(names)[0] if names else "faces"),
              "shardlist": shardlist, "parts": parts}
    from facesift.common.atomic import atomic_write_json
    atomic_write_json(out, merged)
    return merged


def merge_parts(parts: Sequence[str | Path], out: str | Path | None = None, pattern: str = PART_INDEX_GLOB,
                **options: Any) -> tuple[list[Path], Path, dict[str, Any]]:
    """`shards merge-index PARTS`: each part a directory (its `pattern` indexes) or an index file.

    The merged index goes to `out`, by default `index.json` in the one directory given, else
    beside the first part. Returns (part indexes, merged index path, merged index); `options`
    go to `merge_indexes`.
    """
    paths: list[Path] = []
    for item in map(Path, parts):
        paths.extend(find_part_indexes(item, pattern) if item.is_dir() else [item])
    if out is None:
        single_dir = len(parts) == 1 and Path(parts[0]).is_dir()
        out = Path(parts[0]) / INDEX_NAME if single_dir else paths[0].parent / INDEX_NAME
    return paths, Path(out), merge_indexes(paths, out, **options)
