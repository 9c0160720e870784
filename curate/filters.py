"""Per-face quality measures and the filters built on them; every rejection is counted by reason.

Measures (stored in each sample's json whether or not a filter uses them):
- inter-ocular distance in source pixels — the face-size measure that does not depend on how
  tight a detector draws its box;
- yaw, a rough head-turn estimate from 5 landmarks: the nose tip's offset from the eye/mouth
  midline along the eye axis, relative to half the eye distance, mapped through atan
  (0° frontal, ±90° profile; positive = nose towards the image's right);
- sharpness, the variance of the Laplacian of the aligned crop reduced to 128 px grey, so the
  value does not depend on the output crop size;
- pHash and dHash of the crop (imagehash's, from its 128 px grey copy: see `crop_measures`).
"""
from __future__ import annotations

import collections
import math

import numpy as np
import scipy.fft
from PIL import Image, ImageFilter, ImageStat

from facesift.common.geometry import estimate_yaw, interocular
from facesift.curate.config import FilterConfig
from facesift.curate.detections import Detections

MEASURE_SIDE = 128  # crops are box-reduced to ≥ this before measuring (see crop_measures)
PHASH_SIDE = 32  # imagehash.phash's own thumbnail side (hash_size 8 × highfreq_factor 4)


def crop_measures(crop: Image.Image) -> tuple[float, str, str]:
    """(sharpness, pHash hex, dHash hex) of one crop, all from one ≈128 px greyscale copy.

    These run on every crop, and without a detector they are most of curate's CPU time, so the
    crop is converted to grey once and box-reduced by an integer factor to `MEASURE_SIDE`
    (resampled to it exactly when the crop size is no multiple of it); pHash comes from one
    32×32 Lanczos thumbnail of that copy, dHash from the copy itself. 2.5× cheaper than
    `imagehash.phash(crop)`, `imagehash.dhash(crop)` and a Laplacian at full size; on real face
    crops the hashes are identical or a few bits apart from imagehash's on the full crop (less
    than re-encoding the crop as JPEG moves them; `tests/curate/test_filters.py` holds the bound).
    """
    grey = crop.convert("L")
    factor = min(grey.size) // MEASURE_SIDE
    if factor > 1:
        grey = grey.reduce(factor)
    if grey.size != (MEASURE_SIDE, MEASURE_SIDE):
        grey = grey.resize((MEASURE_SIDE, MEASURE_SIDE), Image.BILINEAR)
    thumb = grey.resize((PHASH_SIDE, PHASH_SIDE), Image.LANCZOS, reducing_gap=2.0)
    return _laplacian_var(grey), phash_hex(thumb), dhash_hex(grey)


def sharpness(crop: Image.Image) -> float:
    """Variance of the Laplacian of the crop at `MEASURE_SIDE` px grey (size-independent)."""
    return crop_measures(crop)[0]


_LAPLACIAN = ImageFilter.Kernel((3, 3), [0, 1, 0, 1, -4, 1, 0, 1, 0], scale=4, offset=128)


def _laplacian_var(grey: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels, computed in PIL (which
    releases the GIL, so curate's threads measure crops in parallel; numpy's small-array ops
    would serialise them). The Laplacian is stored as lap/4 + 128 in 8 bits: only |lap| > 510
    clips, and the rounding moves the variance by under 2 % on real crops."""
    lap = grey.filter(_LAPLACIAN).crop((1, 1, grey.width - 1, grey.height - 1))
    return float(ImageStat.Stat(lap).var[0]) * 16


def phash_hex(thumb: Image.Image) -> str:
    """`str(imagehash.phash(thumb))` for a 32×32 grey thumbnail, without its per-call overhead
    (equal bit for bit: the test compares them)."""
    pixels = np.asarray(thumb, np.float64)
    low = scipy.fft.dct(scipy.fft.dct(pixels, axis=0), axis=1)[:8, :8]
    return np.packbits(low > np.median(low)).tobytes().hex()


def dhash_hex(grey: Image.Image) -> str:
    """`str(imagehash.dhash(grey))` for a grey image, likewise."""
    pixels = np.asarray(grey.resize((9, 8), Image.LANCZOS), np.int16)
    return np.packbits(pixels[:, 1:] > pixels[:, :-1]).tobytes().hex()


def select_faces(dets: Detections, cfg: FilterConfig, counts: collections.Counter) -> list[int]:
    """Indices of the faces that pass the geometric filters, ordered left to right."""
    if not len(dets):
        return []
    iod = interocular(dets.landmarks)
    yaw = estimate_yaw(dets.landmarks)
    keep = []
    for i in range(len(dets)):
        if dets.scores[i] < cfg.min_score:
            counts["score"] += 1
        elif iod[i] < cfg.min_interocular:
            counts["small"] += 1
        elif cfg.max_yaw and abs(yaw[i]) > cfg.max_yaw:
            counts["yaw"] += 1
        elif not np.all(np.isfinite(dets.landmarks[i])):
            counts["bad_landmarks"] += 1
        else:
            keep.append(i)
    if cfg.max_faces and len(keep) > cfg.max_faces:
        keep = sorted(keep, key=lambda i: -iod[i])
        counts["max_faces"] += len(keep) - cfg.max_faces
        keep = keep[:cfg.max_faces]
    return sorted(keep, key=lambda i: (float(dets.boxes[i, 0]), float(dets.boxes[i, 1])))


def sharp_enough(value: float, cfg: FilterConfig, counts: collections.Counter) -> bool:
    if cfg.min_sharpness and not (value >= cfg.min_sharpness and math.isfinite(value)):
        counts["blurry"] += 1
        return False
    return True
