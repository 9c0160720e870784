"""A corpus of bad inputs beside good ones, made at test time, for every command to survive.

Each case is a file a real crawl or a real folder has produced: HTML served as an image, a
zero-byte or truncated download, a decompression bomb, a file whose extension lies, a symlink
loop, a file nobody may read, and images in every mode Pillow opens (16-bit greyscale, CMYK,
palette with transparency...). `good` lists the files that must reach the output exactly once.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass
class Corpus:
    root: Path
    good: list[str] = field(default_factory=list)   # relative paths that must come out once each
    bad: dict[str, str] = field(default_factory=dict)  # relative path -> what is wrong with it


def _face(size: int = 96) -> Image.Image:
    """A real face (a Yale frame) so a detector-free curate has a real picture to crop."""
    with Image.open(SHARED / "yalefaces" / "subject02.normal.gif") as im:
        return im.convert("RGB").resize((size, size))


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width×height pixels, with almost no data: a bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def build(root: Path) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    c = Corpus(root)
    face = _face()
    rgb = np.asarray(face)
    grey = np.asarray(face.convert("L"))

    def good(rel: str, image: Image.Image, **save) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save)
        c.good.append(rel)

    def bad(rel: str, data: bytes, why: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        c.bad[rel] = why

    # names that a lossy key would merge
    good("x.y.jpg", face, quality=90)
    good("x-y.jpg", face.rotate(3), quality=90)
    good("sub/a.jpg", face.transpose(Image.FLIP_LEFT_RIGHT), quality=90)
    good("sub-a.jpg", face.rotate(-3), quality=90)
    good("Case.jpg", face.rotate(5), quality=90)
    good("case.jpg", face.rotate(-5), quality=90)
    good("ünïcode ɸ.jpg", face.rotate(7), quality=90)
    # every image mode
    good("modes/i16.png", Image.fromarray(grey.astype(np.uint16) * 257))
    good("modes/i32.tif", Image.fromarray(grey.astype(np.int32) * 100))
    good("modes/float.tif", Image.fromarray(grey.astype(np.float32) / 255.0, "F"))
    good("modes/la.png", Image.fromarray(grey).convert("LA"))
    pal = face.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    good("modes/p_transparent.png", pal, transparency=0)
    good("modes/cmyk.jpg", face.convert("CMYK"), quality=90)
    good("modes/rgba.png", face.convert("RGBA"))
    good("modes/wrong_extension.gif", face, format="PNG")    # a PNG that says it is a GIF
    import cv2                                                # 16-bit RGB (a 48-bit PNG): Pillow cannot write one
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1].astype(np.uint16) * 257)
    assert ok
    (root / "modes" / "rgb16.png").write_bytes(encoded.tobytes())
    c.good.append("modes/rgb16.png")

    # broken inputs
    bad("html.jpg", b"<!DOCTYPE html><html><body>429 Too Many Requests</body></html>", "HTML served as an image")
    bad("empty.jpg", b"", "zero bytes")
    with io.BytesIO() as buf:
        face.save(buf, "JPEG", quality=90)
        whole = buf.getvalue()
    bad("truncated.jpg", whole[: len(whole) // 3], "truncated download")
    bad("bomb.png", _bomb_png(60000, 60000), "decompression bomb (3.6 gigapixels declared)")
    bad("random.png", b"\x17" + np.random.default_rng(0).bytes(2047), "random bytes (seeded, no image signature)")
    bad("notes.txt.jpg", b"just some text, not an image\n" * 10, "text with an image name")
    loop_a, loop_b = root / "loop_a.jpg", root / "loop_b.jpg"
    loop_a.symlink_to(loop_b.name)
    loop_b.symlink_to(loop_a.name)
    c.bad["loop_a.jpg"] = c.bad["loop_b.jpg"] = "symlink loop"
    locked = root / "locked.jpg"
    face.rotate(9).save(locked, "JPEG", quality=90)
    locked.chmod(0)
    if os.access(locked, os.R_OK):      # root reads anything: then it is a good input
        c.good.append("locked.jpg")
    else:
        c.bad["locked.jpg"] = "unreadable (permissions)"
    return c
