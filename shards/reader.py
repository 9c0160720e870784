"""Reading shards without decoding images: keys per shard, for resume, verify and joins."""
from __future__ import annotations

import tarfile
from typing import Iterator

import webdataset as wds


def _key_of(member_name: str) -> str:
    """webdataset's rule: the key is everything before the first dot of the basename's path."""
    directory, _, base = member_name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{directory}/{stem}" if directory else stem


def iter_keys(url: str) -> Iterator[str]:
    """Sample keys of one shard in tar order (local path or any webdataset URL)."""
    stream = wds.gopen(url, "rb")
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            last = None
            for member in tar:
                if not member.isfile() or member.name.startswith("__"):
                    continue
                key = _key_of(member.name)
                if key != last:
                    yield key
                    last = key
    finally:
        stream.close()
