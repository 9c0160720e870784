"""`shards sample N`: a PNG grid of N random crops — people want to look at their data.

The N samples are a uniform reservoir sample over the whole shard set in one streaming pass
(Vitter/Li "Algorithm L": the positions to keep are drawn ahead, so the images in between are
never read — local shards seek past them). The same seed and shards give the same sheet. A
damaged shard takes part up to its damage (shards/damaged.py): the sample at the damage was
given a position before it turned out incomplete, and is never shown.
"""
from __future__ import annotations

import io
import logging
import math
import random
from pathlib import Path
from typing import Any

from facesift.common.images import SHARD_IMAGE_EXTS
from facesift.shards.damaged import DamageTally
from facesift.shards.index import shard_urls
from facesift.shards.reader import DamagedShard, iter_samples

log = logging.getLogger(__name__)


class Reservoir:
    """Algorithm L: which stream positions enter a size-k uniform sample, decided before reading them."""

    def __init__(self, k: int, rng: random.Random):
        if k < 1:
            raise ValueError(f"sample size must be >= 1, got {k}")
        self.k, self.rng = k, rng
        self.w = math.exp(math.log(self._u()) / k)
        self.next = k + self._skip()

    def _u(self) -> float:
        u = 0.0
        while not 0.0 < u < 1.0:
            u = self.rng.random()
        return u

    def _skip(self) -> int:
        return int(math.floor(math.log(self._u()) / math.log1p(-self.w)))

    def slot(self, position: int) -> int | None:
        """The reservoir slot the item at `position` (0-based, called in order) replaces, or None."""
        if position < self.k:
            return position
        if position < self.next:
            return None
        slot = self.rng.randrange(self.k)
        self.w *= math.exp(math.log(self._u()) / self.k)
        self.next += self._skip() + 1
        return slot


def sample_images(spec: Any, n: int, seed: int = 0, progress: bool = True,
                  tally: DamageTally | None = None) -> list[tuple[str, bytes]]:
    """(key, image bytes) of `n` uniformly chosen samples, in index order; fewer if the set is smaller.
    Damaged shards are drawn from as far as they read, and go to `tally`."""
    from facesift.common.progress import progress as progress_bar

    reservoir = Reservoir(n, random.Random(seed))
    slots: list[tuple[int, str, bytes] | None] = [None] * n
    position = 0
    chosen: dict[str, int] = {}

    def select(key: str) -> bool:
        nonlocal position
        slot = reservoir.slot(position)
        position += 1
        if slot is None:
            return False
        chosen[key] = slot
        return True

    tally = tally if tally is not None else DamageTally()
    urls = shard_urls(spec)
    for url in progress_bar(urls, unit="shard", desc="sample", disable=not progress):
        try:
            for sample in iter_samples(url, extensions=SHARD_IMAGE_EXTS, select=select):
                slot = chosen.pop(sample["__key__"])
                data = next((sample[e] for e in SHARD_IMAGE_EXTS if e in sample), None)
                if data is None:
                    log.warning("%s: sample %s has no image member; left out", url, sample["__key__"])
                    continue
                slots[slot] = (position - 1, sample["__key__"], data)
        except DamagedShard as exc:
            chosen.clear()  # the sample at the damage was chosen before it turned out incomplete
            tally.add(exc)
    kept = sorted(s for s in slots if s is not None)
    return [(key, data) for _, key, data in kept]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap size
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_sheet(items: list[tuple[str, bytes]], cell: int = 128, cols: int = 0,
                 captions: bool = True, gap: int = 2):
    """A grid image of the items; an undecodable image shows as a red cell, never a crash."""
    from PIL import Image, ImageDraw, ImageOps

    if not items:
        raise ValueError("nothing to draw: the shard set has no images")
    cols = cols or math.ceil(math.sqrt(len(items)))
    rows = math.ceil(len(items) / cols)
    caption_h = max(10, cell // 10) if captions else 0
    font = _font(caption_h - 2) if captions else None
    step_x, step_y = cell + gap, cell + caption_h + gap
    sheet = Image.new("RGB", (cols * step_x + gap, rows * step_y + gap), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for i, (key, data) in enumerate(items):
        x, y = gap + (i % cols) * step_x, gap + (i // cols) * step_y
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.draft("RGB", (cell, cell))  # JPEG: decode at reduced scale when much larger
                thumb = ImageOps.contain(im.convert("RGB"), (cell, cell), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        except Exception as exc:  # a broken crop is shown, not fatal: `shards verify` names it
            log.warning("sample %s does not decode (%s); drawn as a red cell", key, exc)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(160, 20, 20))
        if captions:
            draw.text((x + 1, y + cell), _fit(draw, key, font, cell - 2), fill=(220, 220, 220), font=font)
    return sheet


def contact_sheet(spec: Any, n: int, out: str | Path, seed: int = 0, cell: int = 128, cols: int = 0,
                  captions: bool = True, progress: bool = True, tally: DamageTally | None = None) -> list[str]:
    """Sample, render and write the PNG atomically; returns the keys shown, in index order."""
    from facesift.common.atomic import atomic_write

    if Path(out).is_dir():
        raise IsADirectoryError(f"{out} is a directory: --out names the PNG file to write")
    items = sample_images(spec, n, seed, progress, tally)
    sheet = render_sheet(items, cell=cell, cols=cols, captions=captions)
    with atomic_write(out, "wb") as fh:
        sheet.save(fh, format="PNG", optimize=True)
    return [key for key, _ in items]
