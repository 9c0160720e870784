"""`index.json`: the wids-compatible list of shards, and turning any shard spec into URLs.

Every consumer (pretrain, embed, finetune, `shards verify`) names its input the same loose
way a user would — a shard directory, an `index.json`, a brace pattern, a `pipe:` command or
an http URL — and gets back the ordered list of shard URLs, so row order ("index order")
means the same thing in every stage.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import braceexpand

from tools.atomic import atomic_write_json

INDEX_NAME = "index.json"
SHARD_GLOB = "*.tar"


def read_index(path: str | Path) -> dict[str, Any]:
    """Load an index.json; its `shardlist` urls are returned as written (often relative)."""
    path = Path(path)
    data = json.loads(path.read_text())
    if "shardlist" not in data:
        raise ValueError(f"{path}: not a shard index (no 'shardlist')")
    return data


def write_index(directory: str | Path, shardlist: list[dict[str, Any]], name: str = "faces",
                filename: str = INDEX_NAME, **extra: Any) -> Path:
    """Rewrite `directory/<filename>` (default index.json) atomically. Entries: {"url", "nsamples", "sha256"}."""
    path = Path(directory) / filename
    atomic_write_json(path, {"wids_version": 1, "name": name, "shardlist": shardlist, **extra})
    return path


def local_path(url: str) -> str | None:
    """The filesystem path behind a shard URL (plain, `file:` or `file://`), or None for
    `pipe:`, http and any other scheme."""
    if url.startswith("file://"):
        return url[len("file://"):]
    if url.startswith("file:"):
        return url[len("file:"):]
    if "://" in url or url.startswith("pipe:"):
        return None
    return url


def index_urls(index_path: str | Path) -> list[str]:
    """Shard URLs of an index, relative ones resolved against the index's directory."""
    index_path = Path(index_path)
    base = index_path.parent
    urls = []
    for entry in read_index(index_path)["shardlist"]:
        url = entry["url"]
        path = local_path(url)
        if path is not None and not os.path.isabs(path):
            url = str(base / path)
        urls.append(url)
    return urls


def shard_urls(spec: str | Path | Iterable[str]) -> list[str]:
    """Resolve a shard spec to an ordered list of URLs.

    Accepts: a directory (its index.json, else its *.tar sorted), an index.json path, a
    brace pattern (``faces-{000000..000009}.tar``), ``file:``/``pipe:``/http URLs, a
    comma-separated string, or a list of any of these.
    """
    if not isinstance(spec, (str, Path)):
        return [u for item in spec for u in shard_urls(item)]
    text = str(spec)
    if "," in text and not text.startswith("pipe:"):
        return shard_urls([s for s in text.split(",") if s])
    path = local_path(text)
    if path is None:
        return list(braceexpand.braceexpand(text))
    local = Path(path)
    if local.is_dir():
        if (local / INDEX_NAME).exists():
            return index_urls(local / INDEX_NAME)
        found = sorted(str(p) for p in local.glob(SHARD_GLOB))
        if not found:
            raise FileNotFoundError(f"{local}: no {INDEX_NAME} and no .tar shards")
        return found
    if local.suffix == ".json":
        return index_urls(local)
    expanded = list(braceexpand.braceexpand(str(local)))
    missing = [p for p in expanded if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"shard(s) not found: {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    return expanded
