"""Any decoded Pillow image → 8-bit RGB with the right tones, whatever its mode.

Pillow's `convert("RGB")` is right for 8-bit modes but clips wider ones: a 16-bit greyscale PNG
(`I;16`, values 0..65535) comes out all white, and the detector then finds no face in a
perfectly good photo. So the wide modes are rescaled here, once, before anything else sees the
pixels:

- `I;16`, `I;16B`, `I;16L`, `I;16N`: 16-bit samples, value × 255 / 65535 (= / 257), rounded.
- `I` (32-bit int: Pillow's mode for 16-bit PGM/PPM and some TIFFs) and `F` (32-bit float,
  TIFF): the sample range is not in the mode, so it is read from the data: floats within
  [0, 1] are fractions (× 255); values within 0..255 are 8-bit; within 0..65535 16-bit (/ 257);
  anything wider is stretched from 0 to its maximum. Negative values are clipped to 0.
- Transparency (`RGBA`, `LA`, `PA`, `P` or `L` / `RGB` with a `transparency` entry) is
  composited onto white: a transparent background reads as white paper, not as black.
- Everything else (`1`, `L`, `P`, `CMYK`, `YCbCr`, 48-bit RGB PNGs, which Pillow already opens as
  8-bit `RGB`) goes through Pillow's own conversion.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

WHITE = (255, 255, 255, 255)


def _scale_for(values: np.ndarray, is_float: bool) -> float:
    """The full-scale value of an `I` / `F` image, guessed from its data (see the module doc)."""
    finite = values[np.isfinite(values)] if is_float else values
    top = float(finite.max()) if finite.size else 0.0
    if is_float and top <= 1.0:
        return 1.0
    if top <= 255:
        return 255.0
    if top <= 65535:
        return 65535.0
    return top


def wide_to_l(im: Image.Image) -> Image.Image:
    """A 16/32-bit single-channel image (`I;16*`, `I`, `F`) → 8-bit `L`, tones kept."""
    if im.mode.startswith("I;16"):
        values = np.asarray(im).astype(np.float64)  # numpy reads I;16B etc. in their byte order
        scale = 65535.0
    else:
        values = np.asarray(im, dtype=np.float64)
        scale = _scale_for(values, im.mode == "F")
    values = np.nan_to_num(values, nan=0.0, posinf=scale, neginf=0.0)
    out = np.rint(np.clip(values, 0.0, scale) * (255.0 / scale)).astype(np.uint8)
    return Image.fromarray(out, mode="L")


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB of a loaded image of any mode, wide modes rescaled and alpha on white."""
    if im.mode == "RGB" and "transparency" not in im.info:
        return im
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        im = wide_to_l(im)
    if has_alpha(im):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    return im.convert("RGB")
