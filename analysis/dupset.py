"""Known-duplicate evaluation sets: originals plus transformed copies, with ground truth.

Thresholds are only meaningful against data with known answers. Three sets, all written as
webdataset shards so that `facesift embed` reads them like any other:

* `build` (the original test set): each original and five copies of it (low-quality JPEG,
  downscale, 90% crop, brightness/contrast, small rotation).
* `neardup_items` — the issue #13 set: 1,000 face crops (landmarks5, half LFW, half web) and
  567 copies made with fixed edits (JPEG q25, 0.6x rescale, 90% centred crop, brightness x1.25,
  contrast x0.8, 6 degree rotation), 1 to 3 copies per copied original.
* `hard_negative_items`: the hard negatives a face embedding puts close — every Yale frame
  (15 subjects under other light, expression, with/without glasses: the same person in
  another photo, or the next frame of one session), the faces of the multi-face and same-person
  photos (given by the caller, who detects them) and 200 landmark crops — plus copies of 40 %
  of them made with `HELDOUT_VARIANTS`, edits *other* than the calibration's
  (`analysis.calibrate.make_copy`): harsher JPEG and downscale, a corner-anchored crop, gamma,
  blur, noise, a letterbox border, larger rotations. Judged on edits it was not calibrated on.

Originals with identical pixels (the Yale set has a few: `normal` == `noglasses` for several
subjects) form one family: they *are* duplicates. Everything else — including the same person
photographed under other lighting or expression — is not, which is what makes precision
meaningful. `write_items` stores each image through a `store` function: the tests and the
benchmark pass one that does what `curate --detector none` does to a photo.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

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


# ---------------------------------------------------------------------------- the issue #13 set and the hard negatives

ISSUE_VARIANTS = ("jpeg", "rescale", "crop", "bright", "contrast", "rotate")
HELDOUT_VARIANTS = ("jpeg", "resize", "crop", "gamma", "blur", "rotate", "noise", "pad")


@dataclass
class Item:
    """One image of a known set: its key, pixels, shard json and duplicate family."""
    key: str
    image: Image.Image
    meta: dict
    family: int


def _reencode(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def issue_copy(image: Image.Image, variant: str) -> Image.Image:
    """The fixed edits of the issue's near-duplicate set."""
    w, h = image.size
    if variant == "jpeg":
        return _reencode(image, 25)
    if variant == "rescale":
        return image.resize((max(8, round(w * 0.6)), max(8, round(h * 0.6))), Image.Resampling.BILINEAR)
    if variant == "crop":
        cw, ch = round(w * 0.9), round(h * 0.9)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        return image.crop((x0, y0, x0 + cw, y0 + ch))
    if variant == "bright":
        return ImageEnhance.Brightness(image).enhance(1.25)
    if variant == "contrast":
        return ImageEnhance.Contrast(image).enhance(0.8)
    if variant == "rotate":
        return image.rotate(6, resample=Image.Resampling.BILINEAR)
    raise ValueError(variant)


def heldout_copy(image: Image.Image, variant: str, rng: np.random.Generator) -> Image.Image:
    """Edits the calibration does not make (other kinds, other parameters, other crop geometry)."""
    w, h = image.size
    if variant == "jpeg":
        return _reencode(image, int(rng.integers(10, 19)))
    if variant == "resize":
        s = float(rng.uniform(0.35, 0.45))
        return image.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)
    if variant == "crop":  # anchored at a corner: the face moves off-centre, unlike the calibration's crops
        cw, ch = round(w * 0.82), round(h * 0.82)
        x0, y0 = int(rng.choice([0, w - cw])), int(rng.choice([0, h - ch]))
        return image.crop((x0, y0, x0 + cw, y0 + ch))
    if variant == "gamma":
        g = float(rng.choice([0.6, 1.6]))
        return image.point([round(255 * (i / 255) ** g) for i in range(256)] * 3)
    if variant == "blur":
        return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 2.0))))
    if variant == "rotate":
        angle = float(rng.uniform(6, 8)) * float(rng.choice([-1, 1]))
        return image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    if variant == "noise":
        a = np.asarray(image).astype(np.float32) + rng.normal(0, 12, (h, w, 1))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if variant == "pad":  # a letterbox border: the face shrinks inside a larger frame
        canvas = Image.new("RGB", (round(w * 1.15), round(h * 1.15)), (255, 255, 255))
        canvas.paste(image, (round(w * 0.075), round(h * 0.075)))
        return canvas
    raise ValueError(variant)


def _originals(named: Iterable[tuple[str, Image.Image, dict]]) -> list[Item]:
    """Items of the originals; pixel-identical ones share a family."""
    out, family_of = [], {}
    for stem, image, meta in named:
        image = image.convert("RGB")
        digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
        family = family_of.setdefault(digest, len(family_of))
        out.append(Item(sanitize_key(f"{stem}_orig"), image, {**meta, "query": "orig"}, family))
    return out


def neardup_items(shared: Path, originals: int = 1000, copies: int = 567, seed: int = 0) -> list[Item]:
    """The issue's set: landmark crops (half LFW, half web) and copies with the fixed edits."""
    rng = np.random.default_rng(seed)
    root = Path(shared) / "landmarks5"
    picked = []
    for part, n in (("lfw_5590", originals // 2), ("net_7876", originals - originals // 2)):
        files = sorted((root / part).glob("*.jpg"))
        picked += [(part, files[i]) for i in np.sort(rng.choice(len(files), n, replace=False))]
    items = _originals((f"{part[:3]}-{p.stem}", Image.open(p), {"photo_id": p.stem, "source": part,
                                                                  "owner": part}) for part, p in picked)
    base = list(items)
    made = 0
    for o in rng.permutation(len(base)):
        if made >= copies:
            break
        m = min(int(rng.integers(1, 4)), copies - made)
        for v in rng.choice(len(ISSUE_VARIANTS), m, replace=False):
            variant = ISSUE_VARIANTS[v]
            src = base[o]
            items.append(Item(src.key.rsplit("_", 1)[0] + f"_{variant}", issue_copy(src.image, variant),
                              {**src.meta, "query": variant}, src.family))
            made += 1
    return items


def hard_negative_items(shared: Path, faces: list[tuple[str, Image.Image]], fillers: int = 200,
                        copy_share: float = 0.4, seed: int = 1) -> list[Item]:
    """Yale frames + the given photo faces + landmark crops, and held-out copies of some of them.

    `faces`: (name, aligned crop) of the faces in ../shared/data/photos (`<photo>#<n>`), found
    by the caller's detector. Yale subjects are the `owner`, so same-subject pairs are easy to find."""
    rng = np.random.default_rng(seed)
    named = []
    for p in sorted((Path(shared) / "yalefaces").glob("*.gif")):
        subject, condition = p.name.split(".")[:2]
        named.append((f"yale-{subject}-{condition}", Image.open(p),
                      {"photo_id": f"{subject}.{condition}", "source": "yale", "owner": subject}))
    for name, image in faces:
        photo = name.split("#")[0]
        named.append((f"photo-{name.replace('#', '-f')}", image, {"photo_id": name, "source": "photos",
                                                                   "owner": photo}))
    files = sorted((Path(shared) / "landmarks5" / "lfw_5590").glob("*.jpg"))
    for i in np.sort(rng.choice(len(files), fillers, replace=False)):
        named.append((f"lfw-{files[i].stem}", Image.open(files[i]), {"photo_id": files[i].stem, "source": "lfw",
                                                                    "owner": "lfw"}))
    items = _originals(named)
    for src in list(items):
        if rng.random() >= copy_share:
            continue
        for v in rng.choice(len(HELDOUT_VARIANTS), int(rng.integers(1, 3)), replace=False):
            variant = HELDOUT_VARIANTS[v]
            items.append(Item(src.key.rsplit("_", 1)[0] + f"_{variant}", heldout_copy(src.image, variant, rng),
                              {**src.meta, "query": variant}, src.family))
    return items


def jpeg_store(image: Image.Image, meta: dict) -> tuple[bytes, dict]:
    """Default `store`: the image as JPEG q92, the json unchanged."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92)
    return buf.getvalue(), meta


def write_items(items: list[Item], out_tar: str | Path,
                store: Callable[[Image.Image, dict], tuple[bytes, dict]] = jpeg_store) -> dict[str, int]:
    """Write the shard (keys must be unique); returns key -> family (the ground truth)."""
    import webdataset as wds
    out_tar = Path(out_tar)
    out_tar.parent.mkdir(parents=True, exist_ok=True)
    families: dict[str, int] = {}
    with wds.TarWriter(str(out_tar), mtime=0) as sink:
        for item in items:
            if item.key in families:
                raise ValueError(f"duplicate key {item.key}")
            data, meta = store(item.image, item.meta)
            families[item.key] = item.family
            sink.write({"__key__": item.key, "jpg": data, "json": json.dumps(meta).encode()})
    return families


def hard_negative_pairs(keys: list[str], families: dict[str, int], meta: list[dict]) -> set[tuple[int, int]]:
    """Row pairs that are hard negatives: same owner (Yale subject, photo, or photographed
    person), different family — another frame or another photo of the same face."""
    by_owner: dict[str, list[int]] = {}
    for row, m in enumerate(meta):
        if m.get("source") in ("yale", "photos"):
            owner = m["owner"] if m.get("source") == "yale" else m["owner"].rstrip("0123456789").rstrip("_")
            by_owner.setdefault(owner, []).append(row)
    out = set()
    for rows in by_owner.values():
        for n, a in enumerate(rows):
            for b in rows[n + 1:]:
                if families[keys[a]] != families[keys[b]]:
                    out.add((min(a, b), max(a, b)))
    return out
