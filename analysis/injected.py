"""Pretraining sets of one size with a known share of near-duplicates: the redundancy study's input.

The study (`facesift study redundancy`, docs/studies.md) asks whether the cheap redundancy
measures predict what redundancy costs SwAV. That needs sets that differ in redundancy only:
the same size N, the same pool of unique faces, and a known rate r of images that are copies.
A set at rate r holds the first (1 - r)·N originals of one seeded order of the pool (so the
originals of a more redundant set are a subset of a less redundant one's) and r·N copies of
them, dealt round-robin so every original has ⌊·⌋ or ⌈·⌉ copies. A copy is one of the edits a
real crawl produces (`CRAWL_EDITS`): a re-upload (Flickr's resize and re-encode), a re-encode
at low quality, a crop, a relight, and a same-session burst frame (a small shift, turn and
zoom with a slight change of light). Each copy's randomness comes from its own key, so a set is
the same whatever order it is built in, and re-running writes the same bytes.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageEnhance

from facesift.shards.format import sanitize_key

CRAWL_EDITS = ("reupload", "reencode", "crop", "relight", "burst")


@dataclass(frozen=True)
class Member:
    """One image of a set: its shard key, the original it shows, and the edit that made it."""
    key: str
    source: str
    edit: str      # "orig" for an original


def key_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from the parts' text: a copy's edit does not depend on build order."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def plan_set(originals: list[str], n: int, rate: float, seed: int = 0) -> list[Member]:
    """The N members of the set at duplicate rate `rate` (0 <= rate < 1), originals first."""
    if n < 1:
        raise ValueError(f"set size must be >= 1, got {n}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"duplicate rate must be in [0, 1), got {rate}")
    copies = round(rate * n)
    unique = n - copies
    if len(set(originals)) != len(originals):
        raise ValueError("the pool's keys must be unique")
    if unique > len(originals):
        raise ValueError(f"a set of {n} at rate {rate:g} needs {unique} unique faces; the pool has {len(originals)}")
    order = sorted(originals)
    key_rng(seed, "order").shuffle(order)
    kept = order[:unique]
    members = [Member(k, k, "orig") for k in kept]
    for i in range(copies):
        source = kept[i % unique]
        edit = CRAWL_EDITS[int(key_rng(seed, source, i // unique, "edit").integers(len(CRAWL_EDITS)))]
        members.append(Member(sanitize_key(f"{source}__{edit}{i // unique}"), source, edit))
    if len({m.key for m in members}) != len(members):
        raise ValueError("a copy's key collides with another key of the set; rename the pool's files")
    return members


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def crawl_copy(image: Image.Image, edit: str, rng: np.random.Generator) -> Image.Image:
    """`image` as one more upload of the same photo would show it; same size as the original."""
    image = image.convert("RGB")
    w, h = image.size
    if edit == "reupload":   # Flickr serves another size of the re-uploaded photo, re-encoded
        s = float(rng.uniform(0.5, 0.8))
        small = image.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)
        return _jpeg(small, int(rng.integers(70, 90))).resize((w, h), Image.Resampling.BICUBIC)
    if edit == "reencode":
        return _jpeg(image, int(rng.integers(15, 40)))
    if edit == "crop":       # a tighter frame of the same photo, scaled back to the crop size
        f = float(rng.uniform(0.8, 0.92))
        cw, ch = round(w * f), round(h * f)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    if edit == "relight":
        image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.35)))
        image = ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.75, 1.3)))
        return ImageEnhance.Color(image).enhance(float(rng.uniform(0.6, 1.3)))
    if edit == "burst":      # the next frame: the face moves, turns and grows a little
        angle = float(rng.uniform(-5, 5))
        zoom = float(rng.uniform(0.95, 1.06))
        dx, dy = (float(v) for v in rng.uniform(-0.05, 0.05, 2) * (w, h))
        moved = image.rotate(angle, resample=Image.Resampling.BICUBIC, translate=(dx, dy), fillcolor=(0, 0, 0))
        cw, ch = round(w / zoom), round(h / zoom)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        moved = moved.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
        return ImageEnhance.Brightness(moved).enhance(float(rng.uniform(0.9, 1.1)))
    raise ValueError(f"unknown edit {edit!r}; expected one of {CRAWL_EDITS}")


def member_jpeg(member: Member, path: str | Path, seed: int = 0) -> bytes:
    """The member's JPEG bytes: the original file as it is, or the copy made from it."""
    data = Path(path).read_bytes()
    if member.edit == "orig":
        return data
    image = Image.open(io.BytesIO(data))
    copy = crawl_copy(image, member.edit, key_rng(seed, member.key, "pixels"))
    buf = io.BytesIO()
    copy.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def write_set(members: Iterable[Member], paths: dict[str, str], out: str | Path, name: str, seed: int = 0,
              yaws: dict[str, float] | None = None) -> Path:
    """The set as webdataset shards (jpg + json {source, edit}, and the source's `yaw` where
    `yaws` has it, as curate stores it, so `data.pose_balance` can run on the set: a copy keeps
    its original's head pose). Written once: an existing finished index is the set (the
    writer's own index makes an interrupted build restart clean)."""
    from facesift.shards.writer import ShardWriter
    out = Path(out)
    if (out / "index.json").exists():
        return out
    yaws = yaws or {}
    with ShardWriter(out, maxcount=2000, name=name) as writer:
        for m in members:
            meta = {"source": m.source, "edit": m.edit, "study": name}
            if m.source in yaws:
                meta["yaw"] = round(float(yaws[m.source]), 2)
            writer.write_group([{"__key__": m.key, "jpg": member_jpeg(m, paths[m.source], seed), "json": meta}])
    return out


def check_no_leak(pool: dict[str, str], test_paths: Iterable[str]) -> None:
    """Raise if a held-out face is in the pretraining pool, by path or by identical bytes."""
    test = [Path(p) for p in test_paths]
    resolved = {Path(p).resolve() for p in pool.values()}
    same_path = [p for p in test if p.resolve() in resolved]
    if same_path:
        raise ValueError(f"{len(same_path)} held-out faces are in the pretraining pool, e.g. {same_path[0]}")
    digests = {hashlib.sha256(Path(p).read_bytes()).digest() for p in pool.values()}
    same_bytes = [p for p in test if hashlib.sha256(p.read_bytes()).digest() in digests]
    if same_bytes:
        raise ValueError(f"{len(same_bytes)} held-out faces have the same bytes as pool faces, e.g. {same_bytes[0]}")
