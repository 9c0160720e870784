"""The sandbox's photo catalogue: seeded fake Flickr photos over a folder of real images.

Kept apart from the HTTP server (tools/flickr_sandbox.py) so the "what exists" part can be read
and tested on its own: who owns which photo, its licence, upload date, title and tags (with the
search keywords and some `no_cv` opt-outs), which source file it reuses, and the deterministic
variant (crop, scale, brightness, JPEG quality) that makes ids sharing a file near-duplicates
rather than byte-identical copies. Also the one pathological file the server offers, a real
20000x20000 PNG.
"""
from __future__ import annotations

import random
import re
import struct
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from facesift.curate.crawl_windows import parse_date

if TYPE_CHECKING:
    from facesift.sandbox_config import SandboxConfig

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".ppm", ".pgm", ".bmp", ".webp", ".tif", ".tiff"}
# Flickr's size suffixes the server can hand out, with their longest-side limits.
SIZE_LIMITS = {"z": 640, "c": 800, "l": 1024, "o": None}
_FILLER_WORDS = ("portrait", "street", "family", "travel", "city", "friends", "summer", "party",
                 "wedding", "festival", "smile", "outdoor", "candid", "event", "crowd")
_UNRELATED_WORDS = ("landscape", "sunset", "mountain", "lake", "architecture", "macro", "flower",
                    "bird", "car", "forest")


@dataclass
class SandboxPhoto:
    id: str
    owner: str
    ownername: str
    license: int
    title: str
    tags: list[str]
    dateupload: int
    source: Path
    secret: str
    server: str
    size: tuple[int, int]              # "original" (variant) size
    sizes: dict[str, tuple[int, int]]  # suffix -> served size
    tokens: frozenset[str] = frozenset()


def tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^\w]+", text.lower()) if t]


def _fit(size: tuple[int, int], limit: int | None) -> tuple[int, int]:
    w, h = size
    if limit is None or max(w, h) <= limit:
        return w, h
    s = limit / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


@dataclass(frozen=True)
class Variant:
    crop: tuple[float, float, float, float]
    scale: float
    brightness: float
    quality: int

    @classmethod
    def for_photo(cls, seed: int, photo_id: str) -> "Variant":
        rng = random.Random(f"{seed}:{photo_id}")
        crop = tuple(rng.uniform(0.0, 0.06) for _ in range(4))
        return cls(crop, rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.15), rng.randint(80, 95))

    def box(self, w: int, h: int) -> tuple[int, int, int, int]:
        l, t, r, b = self.crop
        return int(w * l), int(h * t), w - int(w * r), h - int(h * b)

    def size(self, w: int, h: int) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box(w, h)
        return max(1, round((x1 - x0) * self.scale)), max(1, round((y1 - y0) * self.scale))


def build_catalogue(cfg: "SandboxConfig") -> list[SandboxPhoto]:
    """The seeded set of photos the server answers from (newest first, like Flickr's default sort)."""
    folder = Path(cfg.photos)
    sources = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) \
        if folder.is_dir() else []
    if not sources:
        raise FileNotFoundError(f"no images in {folder} (looked for {sorted(IMAGE_EXTENSIONS)})")
    source_sizes = {}
    for p in sources:
        with Image.open(p) as im:
            source_sizes[p] = im.size
    rng = random.Random(cfg.seed)
    keywords = [q.lower() for q in cfg.queries]
    key_tokens = {t for q in keywords for t in tokens(q)}
    fillers = [w for w in _FILLER_WORDS if w not in key_tokens]
    unrelated_words = [w for w in _UNRELATED_WORDS if w not in key_tokens] or ["photo"]

    # Which keywords each photo matches: later keywords share `overlap` of their photos with
    # earlier ones, so every keyword matches exactly its configured count.
    matches: list[list[str]] = []
    for j, (q, n) in enumerate(cfg.queries.items()):
        q = q.lower()
        shared = 0
        if j > 0 and matches:
            shared = min(int(round(cfg.overlap * n)), len(matches))
            for i in rng.sample(range(len(matches)), shared):
                matches[i].append(q)
        matches.extend([q] for _ in range(n - shared))
    matches.extend([] for _ in range(cfg.unrelated))
    rng.shuffle(matches)

    lo, hi = parse_date(cfg.min_date), parse_date(cfg.max_date) + 86399
    n_total = len(matches)
    n_owners = max(3, n_total // 25)
    owners = [(f"{10000000 + rng.randrange(90000000)}@N0{rng.randrange(1, 9)}", f"user{k:04d}")
              for k in range(n_owners)]
    n_burst = max(1, n_owners // 20)
    bursts = {k: [rng.randrange(lo, hi - 7200) for _ in range(3)] for k in range(n_burst)}
    photos = []
    sessions: dict[tuple[int, int], list[int]] = {}  # (owner, session start) -> photo indices
    base = 50_000_000_000
    for i, words in enumerate(matches):
        pid = str(base + 10 * i + rng.randrange(10))
        if rng.random() < cfg.burst_share:
            k = rng.randrange(n_burst)
            start = rng.choice(bursts[k])
            date = start + rng.randrange(3600)
            sessions.setdefault((k, start), []).append(i)
        else:
            k = n_burst + rng.randrange(n_owners - n_burst) if n_owners > n_burst else 0
            date = rng.randrange(lo, hi + 1)
        owner, ownername = owners[k]
        extra = rng.sample(fillers, min(2, len(fillers))) if words else \
            rng.sample(unrelated_words, min(2, len(unrelated_words)))
        tags = list(dict.fromkeys([t for w in words for t in tokens(w)] + extra))
        if rng.random() < cfg.no_cv_rate:
            tags.append("no_cv")
        title = " ".join([extra[0]] + words + [f"#{i}"]) if words else f"{extra[0]} #{i}"
        source = sources[rng.randrange(len(sources))]
        if cfg.variants:
            full = Variant.for_photo(cfg.seed, pid).size(*source_sizes[source])
            sizes = {s: _fit(full, lim) for s, lim in SIZE_LIMITS.items()}
        else:
            full = source_sizes[source]
            sizes = {s: full for s in SIZE_LIMITS}
        if rng.random() < cfg.no_url_c_rate:
            sizes.pop("c")
        photos.append(SandboxPhoto(
            id=pid, owner=owner, ownername=ownername, license=rng.randrange(11), title=title,
            tags=tags, dateupload=date, source=source, secret=f"{rng.getrandbits(40):010x}",
            server=str(1000 + rng.randrange(9000)), size=full, sizes=sizes,
            tokens=frozenset(tokens(title)) | frozenset(t for tag in tags for t in tokens(tag))))
    same_second_runs(photos, sessions, cfg.tie_sizes, cfg.seed)
    photos.sort(key=lambda p: (-p.dateupload, -int(p.id)))
    return photos


def same_second_runs(photos: list[SandboxPhoto], sessions: dict[tuple[int, int], list[int]],
                     sizes: tuple[int, int], seed: int) -> None:
    """Give each burst session's uploads, in runs of `sizes` photos, one shared second.

    Flickr owners upload 5-20 photos at once and they get the same `dateupload`; such ties are
    what a pager sorted by upload date trips over (see FlickrSandbox.page). Uses its own rng so
    every other attribute of the catalogue stays what the seed gave before ties existed.
    """
    lo, hi = (int(x) for x in sizes)
    if not 1 <= lo <= hi:
        raise ValueError(f"tie_sizes must be (lo, hi) with 1 <= lo <= hi, got {tuple(sizes)}")
    if hi == 1:
        return
    rng = random.Random(f"{seed}:ties")
    for key in sorted(sessions):
        members = sorted(sessions[key], key=lambda i: (photos[i].dateupload, i))
        i = 0
        while i < len(members):
            run = members[i:i + rng.randint(lo, hi)]
            for j in run:
                photos[j].dateupload = photos[run[0]].dateupload
            i += len(run)


def huge_png(size: int = 20000) -> bytes:
    """A real size×size 1-bit PNG, compressing to a few tens of KB; generated once per machine."""
    path = Path(tempfile.gettempdir()) / "facesift-sandbox" / f"huge-{size}x{size}.png"
    if path.exists():
        return path.read_bytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\xaa" * ((size + 7) // 8)
    parts = [comp.compress(row * 500) for _ in range(size // 500)]
    parts.append(comp.compress(row * (size % 500)))
    parts.append(comp.flush())
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
           + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return png
