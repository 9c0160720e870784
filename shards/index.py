"""`index.json`: the wids-compatible list of shards, and turning any shard spec into URLs.

Every consumer (pretrain, embed, finetune, `shards verify`) names its input the same loose
way a user would — a shard directory, an `index.json`, a brace pattern, a `pipe:` command or
an http URL — and gets back the ordered list of shard URLs, so row order ("index order")
means the same thing in every stage.

An index may live where the shards live: ``https://host/faces/index.json``, ``s3://...`` or a
``pipe:`` command that prints it (``pipe:aws s3 cp s3://bucket/faces/index.json -``). It is
read through webdataset's own `gopen`, like the shards, and its relative shard names resolve
against it — in a `pipe:` command by swapping the index's file name for the shard's — so a
directory written by `curate` and copied to object storage works as it is.
"""
from __future__ import annotations

import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

import braceexpand

from facesift.common.atomic import atomic_write_json

INDEX_NAME = "index.json"
SHARD_GLOB = "*.tar"


class BadIndex(ValueError):
    """An index.json that is not a usable shard index (not JSON, cut off, malformed entries)."""


def read_index(path: str | Path) -> dict[str, Any]:
    """Load an index.json, local or remote; its `shardlist` urls are returned as written (often relative).

    Anything that is not a well-formed index — not JSON, cut off, no `shardlist`, an entry
    without a `url` — is a ValueError naming the file, so every command reports it in one line."""
    local = local_path(str(path))
    try:
        if local is not None:
            data = json.loads(Path(local).read_bytes())
        else:
            import webdataset as wds
            with wds.gopen(str(path), "rb") as stream:
                data = json.loads(stream.read())
    except FileNotFoundError:
        raise
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise BadIndex(f"{path}: not a shard index: it is not valid JSON ({exc})") from None
    except Exception as exc:  # transport errors of a remote index: name the index, keep the cause
        raise BadIndex(f"{path}: could not read the shard index: {exc}") from exc
    check_index(data, path)
    return data


def check_index(data: Any, path: str | Path) -> None:
    """Refuse an index whose shard list a reader could not use (BadIndex naming the problem)."""
    if not isinstance(data, dict) or "shardlist" not in data:
        raise BadIndex(f"{path}: not a shard index (no 'shardlist')")
    if not isinstance(data["shardlist"], list):
        raise BadIndex(f"{path}: not a shard index ('shardlist' is not a list)")
    for n, entry in enumerate(data["shardlist"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"]:
            raise BadIndex(f"{path}: shardlist entry {n} has no 'url'")
        count = entry.get("nsamples")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise BadIndex(f"{path}: shardlist entry {n} ({entry['url']}): nsamples {count!r} "
                             "is not a count")


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


def _remote_json_token(spec: str) -> str | None:
    """The index file named by a remote spec: a URL whose path ends in .json, or the last
    .json argument of a `pipe:` command; None when the spec names no index."""
    if spec.startswith("pipe:"):
        tokens = [t.strip("'\"") for t in spec[len("pipe:"):].split()]
        found = [t for t in tokens if t.endswith(".json")]
        return found[-1] if found else None
    return spec if urllib.parse.urlsplit(spec).path.endswith(".json") else None


def index_location(spec: Any) -> str | None:
    """Where the index behind a single shard spec lives — a local path (a directory's
    index.json, or a .json file) or a remote URL / `pipe:` command — or None."""
    if not isinstance(spec, (str, Path)) or ("," in str(spec) and not str(spec).startswith("pipe:")):
        return None
    text = str(spec)
    path = local_path(text)
    if path is None:
        return text if _remote_json_token(text) else None
    local = Path(path)
    if local.is_dir():
        return str(local / INDEX_NAME) if (local / INDEX_NAME).is_file() else None
    return str(local) if local.suffix == ".json" and local.is_file() else None


def resolve_url(location: str, url: str) -> str:
    """A shard URL as written in the index at `location`, made usable from here."""
    path = local_path(url)
    if path is None or os.path.isabs(path):  # pipe:, any scheme, or an absolute path
        return url
    base = local_path(location)
    if base is not None:
        return str(Path(base).parent / path)
    if location.startswith("pipe:"):
        token = _remote_json_token(location)
        head, sep, _ = token.rpartition("/")
        return location.replace(token, f"{head}{sep}{path}")
    if location.startswith(("http://", "https://")):
        return urllib.parse.urljoin(location, path)
    return re.sub(r"[^/]*$", "", location) + path  # s3://, gs:// ...: the index's folder


def index_entries(location: str) -> list[tuple[str, dict[str, Any]]]:
    """(resolved URL, entry) for every shard of the index at `location`, in index order."""
    return [(resolve_url(str(location), e["url"]), e) for e in read_index(location)["shardlist"]]


def index_urls(index_path: str | Path) -> list[str]:
    """Shard URLs of an index (local or remote), relative ones resolved against the index."""
    return [url for url, _ in index_entries(str(index_path))]


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
        if _remote_json_token(text):
            return index_urls(text)
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
