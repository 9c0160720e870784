"""Quality measures and filters: each rejection reason counted, order and caps deterministic."""
from __future__ import annotations

import collections
import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter

from facesift.curate.config import FilterConfig
from facesift.curate.detect import Detections
from facesift.common.geometry import estimate_yaw, interocular
from facesift.curate.filters import crop_measures, dhash_hex, phash_hex, select_faces, sharp_enough, sharpness

FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float32)


def _face(dx: float = 0, scale: float = 1.0, nose_shift: float = 0.0) -> np.ndarray:
    lm = FRONTAL.copy() * scale
    lm[2, 0] += nose_shift * scale
    lm[:, 0] += dx
    return lm


def _dets(landmarks: list[np.ndarray], scores: list[float]) -> Detections:
    lms = np.stack(landmarks).astype(np.float32)
    boxes = np.concatenate([lms.min(1) - 10, lms.max(1) + 10], axis=1)
    return Detections(boxes, np.array(scores, np.float32), lms)


def test_interocular_and_yaw():
    assert interocular(FRONTAL)[0] == 40
    assert abs(estimate_yaw(FRONTAL)[0]) < 1e-6
    right, left = estimate_yaw(_face(nose_shift=10))[0], estimate_yaw(_face(nose_shift=-10))[0]
    assert right > 20 and left == -right
    assert estimate_yaw(_face(nose_shift=20))[0] > right  # monotone in the nose offset
    # rotation (roll) of the whole face does not change the yaw estimate
    theta = np.deg2rad(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    assert estimate_yaw(_face(nose_shift=10) @ rot.T)[0] == np.float64(right).round(6) or \
        abs(estimate_yaw(_face(nose_shift=10) @ rot.T)[0] - right) < 1e-6


def test_each_filter_counts_its_rejections():
    dets = _dets([_face(0), _face(200, scale=0.5), _face(400), _face(600, nose_shift=25), _face(800)],
                 [0.99, 0.99, 0.90, 0.99, 0.99])
    counts = collections.Counter()
    keep = select_faces(dets, FilterConfig(min_interocular=32, min_score=0.95, max_yaw=45), counts)
    assert keep == [0, 4]
    assert counts == {"small": 1, "score": 1, "yaw": 1}


def test_max_faces_keeps_the_largest_left_to_right():
    dets = _dets([_face(500, 1.0), _face(0, 2.0), _face(300, 1.5), _face(900, 1.2)], [0.99] * 4)
    counts = collections.Counter()
    keep = select_faces(dets, FilterConfig(max_faces=2, min_interocular=10), counts)
    assert keep == [1, 2] and counts["max_faces"] == 2


def test_sharpness_separates_blur():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).resize((256, 256))
    sharp, blurred = sharpness(im), sharpness(im.filter(ImageFilter.GaussianBlur(4)))
    assert sharp > 10 * blurred
    counts = collections.Counter()
    cfg = FilterConfig(min_sharpness=(sharp + blurred) / 2)
    assert sharp_enough(sharp, cfg, counts) and not sharp_enough(blurred, cfg, counts)
    assert counts["blurry"] == 1
    assert sharp_enough(0.0, FilterConfig(), collections.Counter())  # 0 = off


FACES = Path(__file__).resolve().parents[2] / "data" / "sample" / "landmarks5" / "images"


@pytest.fixture(scope="module")
def face_crops() -> list[Image.Image]:
    files = sorted(FACES.glob("*.jpg"))[:120]
    assert len(files) == 120
    return [Image.open(f).convert("RGB").resize((256, 256), Image.BICUBIC) for f in files]


def test_hash_helpers_equal_imagehash_bit_for_bit(face_crops):
    for crop in face_crops[:40]:
        thumb = crop.convert("L").resize((32, 32), Image.LANCZOS)
        assert phash_hex(thumb) == str(imagehash.phash(thumb))
        assert dhash_hex(thumb) == str(imagehash.dhash(thumb))


def test_crop_measures_agree_with_imagehash_on_the_full_crop(face_crops):
    """The cheap path (grey at 128 px, one thumbnail) stays within what JPEG re-encoding moves."""
    p_bits, d_bits, jpeg_bits = [], [], []
    for crop in face_crops:
        _, p, d = crop_measures(crop)
        p_bits.append(imagehash.hex_to_hash(p) - imagehash.phash(crop))
        d_bits.append(imagehash.hex_to_hash(d) - imagehash.dhash(crop))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        again = Image.open(buf)
        jpeg_bits.append(max(imagehash.phash(again) - imagehash.phash(crop),
                             imagehash.dhash(again) - imagehash.dhash(crop)))
    assert np.mean(np.array(p_bits) == 0) >= 0.85 and max(p_bits) <= 4
    assert np.mean(np.array(d_bits) == 0) >= 0.6 and np.mean(d_bits) <= 0.6 and max(d_bits) <= 6
    assert np.mean(p_bits) <= 2 * np.mean(jpeg_bits) + 0.5


def test_sharpness_does_not_depend_on_crop_size(face_crops):
    for crop in face_crops[:10]:
        base = sharpness(crop)
        for side in (128, 200, 512):
            assert sharpness(crop.resize((side, side), Image.BICUBIC)) == pytest.approx(base, rel=0.5)
