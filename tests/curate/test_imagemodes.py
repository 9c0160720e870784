"""Every image mode decodes to 8-bit RGB with its tones (issue 12, defect 4): each mode against a
reference conversion, and a 16-bit greyscale photo of real faces still has its faces."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from facesift.curate.download import decode_image

CAP = 10**8
RAMP16 = (np.arange(256 * 8, dtype=np.int64).reshape(8, 256) * 32).astype(np.uint16)  # 0 .. 65504


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png16(samples: np.ndarray, color_type: int) -> bytes:
    """A 16-bit-per-sample PNG written by hand (Pillow cannot write 48/64-bit RGB(A))."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _grey(rgb: np.ndarray) -> np.ndarray:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].astype(np.int64)


def _ref16(v: np.ndarray) -> np.ndarray:
    return np.rint(v.astype(np.float64) / 257).astype(np.int64)


def test_i16_png_is_the_gradient_not_white():
    data = _save(Image.fromarray(RAMP16), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    got = _grey(decode_image(data, CAP))
    assert np.array_equal(got, _ref16(RAMP16))               # value / 257, rounded
    assert np.abs(got - (RAMP16.astype(np.int64) >> 8)).max() <= 1
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) > 200


def test_i16b_tiff():
    im = Image.frombytes("I;16B", (256, 8), RAMP16.astype(">u2").tobytes())
    data = _save(im, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I;16B"
    assert np.array_equal(_grey(decode_image(data, CAP)), _ref16(RAMP16))


def test_i_mode_16_bit_pgm_and_8_bit_range_tiff():
    pgm = b"P5\n256 8\n65535\n" + RAMP16.astype(">u2").tobytes()
    assert Image.open(io.BytesIO(pgm)).mode == "I"
    assert np.array_equal(_grey(decode_image(pgm, CAP)), _ref16(RAMP16))
    # a 10-bit PGM: Pillow stretches maxval to 16 bits, so white stays white
    ten = b"P5\n4 1\n1023\n" + np.array([0, 256, 512, 1023], ">u2").tobytes()
    assert _grey(decode_image(ten, CAP)).tolist() == [[0, 64, 128, 255]]
    # 32-bit integer samples that hold 8-bit values are 8-bit values
    ramp8 = np.tile(np.arange(256, dtype=np.int32), (8, 1))
    data = _save(Image.fromarray(ramp8, mode="I"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    assert np.array_equal(_grey(decode_image(data, CAP)), ramp8)


def test_f_mode_tiff_fractions_and_8_bit_values():
    frac = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (8, 1))
    data = _save(Image.fromarray(frac, mode="F"), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert np.array_equal(_grey(decode_image(data, CAP)), np.rint(frac.astype(np.float64) * 255))
    wide = np.tile(np.arange(256, dtype=np.float32), (8, 1))
    assert np.array_equal(_grey(decode_image(_save(Image.fromarray(wide, mode="F"), "TIFF"), CAP)), wide)


def test_la_is_composited_on_white():
    la = np.zeros((8, 256, 2), np.uint8)
    la[..., 0] = np.arange(256)
    la[:, :128, 1] = 255  # left half opaque, right half transparent
    la[:, 128:, 1] = 0
    data = _save(Image.fromarray(la, mode="LA"), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "LA"
    got = _grey(decode_image(data, CAP))
    assert np.array_equal(got[:, :128], np.tile(np.arange(128), (8, 1)))
    assert (got[:, 128:] == 255).all()
    # half transparent black over white: mid grey
    half = Image.fromarray(np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 128, np.uint8)]), mode="LA")
    assert abs(int(_grey(decode_image(_save(half, "PNG"), CAP))[0, 0]) - 127) <= 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency(fmt):
    p = Image.new("P", (8, 4), 0)
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    for x in range(4):
        for y in range(4):
            p.putpixel((x, y), 1)
    data = _save(p, fmt, transparency=0)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "P" and "transparency" in opened.info
    got = decode_image(data, CAP)
    assert got[0, 0].tolist() == [255, 0, 0] and got[0, 7].tolist() == [255, 255, 255]  # not black


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk(fmt):
    colours = [(0, 0, 0, 0), (255, 0, 0, 0), (0, 255, 0, 0), (0, 0, 255, 0), (0, 0, 0, 255), (0, 0, 0, 128)]
    im = Image.new("CMYK", (16 * len(colours), 16))
    for i, c in enumerate(colours):
        im.paste(c, (16 * i, 0, 16 * (i + 1), 16))
    data = _save(im, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    got = decode_image(data, CAP)
    expected = [(255, 255, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 0, 0), (127, 127, 127)]
    tol = 0 if fmt == "TIFF" else 6
    for i, rgb in enumerate(expected):
        assert np.abs(got[8, 16 * i + 8].astype(int) - rgb).max() <= tol, (i, got[8, 16 * i + 8], rgb)


def test_48_bit_and_64_bit_png():
    """Pillow opens 16-bit-per-channel RGB(A) PNGs as 8-bit RGB(A) itself (high bytes): checked."""
    rgb = np.zeros((8, 256, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = RAMP16, 65535 - RAMP16, 40000
    data = _png16(rgb, 2)
    assert Image.open(io.BytesIO(data)).mode == "RGB"
    got = decode_image(data, CAP).astype(np.int64)
    assert np.abs(got - (rgb.astype(np.int64) >> 8)).max() <= 1 and got[..., 0].max() == 255
    rgba = np.dstack([rgb, np.full((8, 256), 65535, np.uint16)])
    got = decode_image(_png16(rgba, 6), CAP).astype(np.int64)
    assert np.abs(got - (rgb.astype(np.int64) >> 8)).max() <= 1
    # 16-bit grey + alpha, opaque
    la = np.dstack([RAMP16, np.full((8, 256), 65535, np.uint16)])
    assert np.abs(_grey(decode_image(_png16(la, 4), CAP)) - (RAMP16.astype(np.int64) >> 8)).max() <= 1


def test_bilevel_and_grey():
    one = Image.new("1", (8, 8), 0)
    one.putpixel((0, 0), 1)
    got = _grey(decode_image(_save(one, "PNG"), CAP))
    assert got[0, 0] == 255 and got[1, 1] == 0
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    assert np.array_equal(_grey(decode_image(_save(Image.fromarray(ramp), "PNG"), CAP)), ramp)


def test_16_bit_photo_keeps_its_faces(mtcnn, shared_data):
    """The symptom: a 16-bit greyscale PNG decoded all white and the photo was recorded no_face."""
    grey8 = np.asarray(Image.open(shared_data / "photos" / "t1.jpg").convert("L"))
    data = _save(Image.fromarray(grey8.astype(np.uint16) * 257), "PNG")
    decoded = decode_image(data, CAP)
    assert np.array_equal(_grey(decoded), grey8)
    (faces,) = mtcnn.detect([decoded])
    assert len(faces.scores) >= 5
