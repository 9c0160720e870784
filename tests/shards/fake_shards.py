"""Build small shard sets for the `shards` tests straight from webdataset.TarWriter + write_index.

Independent of curate's writer on purpose: the readers must accept any shards in the
DESIGN.md §2 format, whoever wrote them.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np
import webdataset as wds
from PIL import Image

from facesift.shards.index import write_index


def jpeg(color: tuple[int, int, int] | None = None, size: int = 32, seed: int = 0) -> bytes:
    """A small JPEG: one solid colour, or noise from `seed`."""
    if color is not None:
        arr = np.zeros((size, size, 3), np.uint8) + np.array(color, np.uint8)
    else:
        arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def meta(key: str, **extra) -> dict:
    photo_id, _, face = key.rpartition("_")
    base = {"photo_id": photo_id, "face_index": int(face), "license": 4, "query": "portrait",
            "detector": "mtcnn", "source": "flickr", "crop_size": 32, "score": 0.99,
            "sharpness": 100.0, "yaw": 0.0}
    base.update(extra)
    return base


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_shard(path: Path, samples: Iterable[dict]) -> int:
    """Samples are webdataset dicts (`__key__`, `jpg`, `json` ...); returns how many were written."""
    n = 0
    with open(path, "wb") as fh, wds.TarWriter(fh, mtime=0) as writer:
        for sample in samples:
            writer.write(sample)
            n += 1
    return n


def sample(key: str, color=None, size: int = 32, **extra) -> dict:
    seed = int(hashlib.md5(key.encode()).hexdigest()[:6], 16)
    return {"__key__": key, "jpg": jpeg(color, size, seed),
            "json": json.dumps(meta(key, crop_size=size, **extra)).encode()}


def make_set(directory: Path, layout: list[list[str]], index: bool = True, first: int = 0,
             **extra) -> list[Path]:
    """One shard per key list in `layout` (faces-%06d.tar from `first`), plus index.json."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, entries = [], []
    for i, keys in enumerate(layout):
        path = directory / f"faces-{first + i:06d}.tar"
        n = write_shard(path, (sample(k, **extra) for k in keys))
        paths.append(path)
        entries.append({"url": path.name, "nsamples": n, "sha256": sha256(path)})
    if index:
        write_index(directory, entries)
    return paths


def keys_grid(nshards: int, per_shard: int, prefix: str = "p") -> list[list[str]]:
    return [[f"{prefix}{s}x{i}_0" for i in range(per_shard)] for s in range(nshards)]


def reindex(directory: Path) -> None:
    """Recompute sha256 and nsamples of every indexed shard (to isolate decode/structure checks)."""
    from facesift.shards.index import read_index
    from facesift.shards.reader import iter_keys
    data = read_index(directory / "index.json")
    for entry in data["shardlist"]:
        path = directory / entry["url"]
        entry["sha256"] = sha256(path)
        entry["nsamples"] = len(list(iter_keys(str(path))))
    write_index(directory, data["shardlist"])


def shards_cli(argv: list[str]) -> int:
    """`facesift shards ...` through this command's own parser (no other command's imports)."""
    import argparse

    from facesift.commands import shards as command
    parser = argparse.ArgumentParser(prog="facesift")
    command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


# ---- damaged shards, built at test time from a real shard (docs/shards.md, "Damaged shards") ----

DAMAGE_KINDS = ("cut-in-data", "cut-at-header", "zero-bytes", "random-bytes", "missing")


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """member name -> (header offset, data offset) of a local shard."""
    import tarfile
    with tarfile.open(path) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


def damage(path: Path, kind: str, at_key: str | None = None) -> None:
    """Damage a shard in place. The cuts land in sample `at_key` (by default the shard's fourth):
    "cut-in-data" inside its first member's data (its earlier samples stay readable), "cut-at-header"
    exactly at its first header (so the sample before it can no longer be proven complete)."""
    path = Path(path)
    if kind in ("cut-in-data", "cut-at-header"):
        offsets = member_offsets(path)
        names = sorted(offsets, key=lambda n: offsets[n][0])
        keys = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
        key = at_key or keys[3]
        header, data = offsets[next(n for n in names if n.split(".", 1)[0] == key)]
        with open(path, "r+b") as fh:
            fh.truncate(data + 10 if kind == "cut-in-data" else header)
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "missing":
        path.unlink()
    else:
        raise ValueError(kind)


def readable_keys(keys: list[str], kind: str, at: int = 3) -> list[str]:
    """The keys of a shard holding `keys` that every reader uses after `damage(kind)`: the complete
    samples before the damage (a cut at a header also loses the sample before it)."""
    return {"cut-in-data": keys[:at], "cut-at-header": keys[:at - 1]}.get(kind, [])
