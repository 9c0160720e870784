"""The images behind embedding rows, read back from the shards an embed folder was made from.

Calibration needs a sample of the dataset's own images, pair verification the images of the
candidate pairs and the report a few thumbnails: all of them a small subset of the rows. Row
*r* is the *r*-th sample of `info.json`'s shard list (embed keeps index order), so only the
shards that hold wanted rows are opened, and each is read only up to its last wanted row.
"""
from __future__ import annotations

import io
from typing import Callable, Iterable, TypeVar

import numpy as np
from PIL import Image

from facesift.common.images import SHARD_IMAGE_EXTS

T = TypeVar("T")


class RowImagesUnavailable(RuntimeError):
    """The shards behind an embed folder cannot be read (moved, deleted, or another count)."""


def decode_rgb(data: bytes) -> Image.Image:
    """Shard bytes -> RGB PIL image (fully loaded, so the bytes can go)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def read_rows(info: dict, rows: Iterable[int], decode: Callable[[bytes], T] = decode_rgb) -> dict[int, T | None]:
    """row -> decode(image bytes) for every wanted row; None where the sample has no decodable image.

    Raises RowImagesUnavailable when a shard cannot be opened or no longer lines up with the
    embeddings (its sample count changed): the rows would name other images."""
    from facesift.shards.rows import iter_rows
    urls, counts = info.get("shards"), info.get("counts")
    if not urls or not counts or len(urls) != len(counts):
        raise RowImagesUnavailable("info.json names no shards: the images behind the rows are unknown")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    by_shard: dict[int, list[int]] = {}
    for r in sorted(set(int(r) for r in rows)):
        by_shard.setdefault(int(np.searchsorted(offsets, r, side="right") - 1), []).append(r)
    out: dict[int, T | None] = {}
    for s, rs in by_shard.items():
        need = set(rs)
        start = int(offsets[s])
        try:
            for pos, sample in enumerate(iter_rows(urls, counts, start, max(rs) + 1, SHARD_IMAGE_EXTS)):
                row = start + pos
                if row not in need:
                    continue
                data = next((sample[e] for e in SHARD_IMAGE_EXTS if e in sample), None)
                try:
                    out[row] = decode(data) if data is not None else None
                except Exception:  # a bad image is that row's problem, not the run's
                    out[row] = None
        except Exception as exc:  # missing file, damaged tar, stale counts: every row of it is unknown
            raise RowImagesUnavailable(f"cannot read the images behind the embeddings from {urls[s]}: "
                                       f"{type(exc).__name__}: {exc}") from None
    return out
