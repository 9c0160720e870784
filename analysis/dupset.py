"""A known-duplicate evaluation set: originals plus transformed copies, with ground truth.

Thresholds are only meaningful against data with known answers. This builds one from any
image folders: each original and five copies of it (low-quality JPEG re-encode, downscale,
90% crop, brightness/contrast shift, small rotation), written as a webdataset shard so that
`facesift embed` reads it like any other. Originals with identical pixels (the Yale set has
a few: `normal` == `noglasses` for several subjects) form one family: they *are* duplicates.
Everything else — including the same person photographed under other lighting or expression —
is not, which is what makes precision meaningful.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageEnhance

from facesift.common.images import IMAGE_SUFFIXES
from facesift.shards.format import sanitize_key

VARIANTS = ("orig", "jpeg", "resize", "crop", "light", "rotate")


def transform(image: Image.Image, variant: str, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    if variant == "orig":
        return image
    if variant == "jpeg":
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(10, 25)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if variant == "resize":
        s = float(rng.uniform(0.45, 0.7))
        return image.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
    if variant == "crop":
        cw, ch = round(w * 0.9), round(h * 0.9)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((x0, y0, x0 + cw, y0 + ch))
    if variant == "light":
        image = ImageEnhance.Brightness(image).enhance(float(rng.choice([0.75, 1.3])))
        return ImageEnhance.Contrast(image).enhance(float(rng.choice([0.75, 1.3])))
    if variant == "rotate":
        angle = float(rng.uniform(3, 6)) * float(rng.choice([-1, 1]))
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(127, 127, 127))
    raise ValueError(variant)


def list_originals(folders: Iterable[tuple[str, Path, int | None]]) -> list[tuple[str, Path]]:
    """(source name, path) of the originals: every image of each folder, or the first `limit` (sorted)."""
    out = []
    for name, folder, limit in folders:
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        out.extend((name, p) for p in files[:limit])
    return out


def build(originals: list[tuple[str, Path]], out_tar: str | Path, seed: int = 0,
          variants: tuple[str, ...] = VARIANTS) -> dict[str, int]:
    """Write the shard; returns key -> family id (the ground truth)."""
    import webdataset as wds
    rng = np.random.default_rng(seed)
    families: dict[str, int] = {}
    family_of_pixels: dict[str, int] = {}
    out_tar = Path(out_tar)
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(out_tar), mtime=0) as sink:
        for source, path in originals:
            image = Image.open(path).convert("RGB")
            digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
            family = family_of_pixels.setdefault(digest, len(family_of_pixels))
            stem = sanitize_key(f"{source}-{path.stem}")
            for variant in variants:
                copy = transform(image, variant, rng)
                buf = io.BytesIO()
                copy.save(buf, "JPEG", quality=92)
                key = f"{stem}_{variant}"
                families[key] = family
                sink.write({"__key__": key, "jpg": buf.getvalue(),
                            "json": json.dumps({"photo_id": stem, "source": source, "owner": source,
                                                "query": variant}).encode()})
    return families


def truth_pairs(families: dict[str, int], keys: list[str]) -> set[tuple[int, int]]:
    """Row pairs (i < j) that share a family."""
    by_family: dict[int, list[int]] = {}
    for row, key in enumerate(keys):
        by_family.setdefault(families[key], []).append(row)
    return {(a, b) for rows in by_family.values() for x, a in enumerate(rows) for b in rows[x + 1:]}


def score(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    """Pair-level precision, recall and F1."""
    hit = len(predicted & truth)
    p = hit / len(predicted) if predicted else 1.0
    r = hit / len(truth) if truth else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "predicted": len(predicted), "true": len(truth)}
