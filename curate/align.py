"""Face alignment: a similarity transform from 5 landmarks to a canonical template, then a warp.

The template is the ArcFace 5-point layout shrunk into a looser frame: by default the eyes are
a quarter of the crop apart (FFHQ-like), so the crop keeps hair, chin and some background —
the paper pre-trains on whole faces with context, not tight recognition crops.

Resampling: a bicubic affine warp does not low-pass filter, so a large face is first box-
reduced by an integer factor (only the region the crop needs) to within 2× of the output scale
before the bicubic warp: no aliasing, and cheap even for big sources. The warp itself is
OpenCV's `warpAffine` (SIMD bicubic, 4× faster than PIL's `Image.transform`, which was most of
curate's per-face CPU time), single-threaded because curate runs warps on its own thread pool.
Coordinates are continuous pixel coordinates (pixel i spans [i, i+1)), like the detectors'
landmarks; OpenCV's integer pixel centres are converted at the call.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from facesift.common.geometry import apply_transform, similarity_transform
from facesift.curate.config import AlignConfig

cv2.setNumThreads(1)  # warps run on curate's encode threads; OpenCV's own pool would oversubscribe

# ArcFace's 112×112 five-point template (left eye, right eye, nose, left/right mouth corner).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def template(crop_size: int = 256, eye_distance: float = 0.25, eye_y: float = 0.46) -> np.ndarray:
    """The 5 target points in a `crop_size` crop: eyes `eye_distance`·size apart, centred at x, at `eye_y`."""
    unit = ARCFACE_112 / 112.0
    eye_mid = unit[:2].mean(axis=0)
    s = eye_distance / (unit[1, 0] - unit[0, 0])
    return ((unit - eye_mid) * s + np.array([0.5, eye_y])) * crop_size


def _invert(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def warp(image: np.ndarray | Image.Image, m: np.ndarray, size: int) -> Image.Image:
    """The `size`×`size` crop of `image` (H×W×3 uint8, or PIL) under source→crop transform `m`
    (bicubic, anti-aliased). Only the source region the crop covers is read."""
    source = np.asarray(image)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))  # crop pixels per source pixel
    inv = _invert(m)  # crop → source
    k = max(1, int(1.0 / scale)) if scale < 0.5 else 1
    corners = apply_transform(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    pad = 4 * k  # bicubic taps reach 2 px beyond a sample
    left = max(0, int(math.floor(corners[:, 0].min())) - pad)
    top = max(0, int(math.floor(corners[:, 1].min())) - pad)
    right = min(source.shape[1], int(math.ceil(corners[:, 0].max())) + pad)
    bottom = min(source.shape[0], int(math.ceil(corners[:, 1].max())) + pad)
    if right - left < k or bottom - top < k:  # the crop lies wholly outside the image
        return Image.new("RGB", (size, size))
    # k > 1: box-reduce the region first; its size a multiple of k so reduced pixel i covers
    # source [left+ik, left+(i+1)k)
    right, bottom = left + (right - left) // k * k, top + (bottom - top) // k * k
    region = source[top:bottom, left:right]
    if k > 1:
        region = cv2.resize(region, ((right - left) // k, (bottom - top) // k), interpolation=cv2.INTER_AREA)
    shift = np.array([[1 / k, 0, -left / k], [0, 1 / k, -top / k], [0, 0, 1]])
    inv = (shift @ np.vstack([inv, [0, 0, 1]]))[:2]
    inv[:, 2] += inv[:, :2] @ np.array([0.5, 0.5]) - 0.5  # OpenCV samples at integer pixel centres
    out = cv2.warpAffine(np.ascontiguousarray(region), inv, (size, size),
                         flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return Image.fromarray(out)


def align_face(image: np.ndarray | Image.Image, landmarks: np.ndarray,
               cfg: AlignConfig) -> tuple[Image.Image, np.ndarray]:
    """Aligned crop of one face and the source→crop transform used."""
    m = similarity_transform(landmarks, template(cfg.crop_size, cfg.eye_distance, cfg.eye_y))
    return warp(image, m, cfg.crop_size), m


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Whole-image path (`--detector none`): the centred square, resampled once to `size`.

    Resampling only the source box that survives the crop (PIL's `box=`) touches fewer pixels than
    resizing the whole image and cropping after; bicubic with a reducing gap keeps downscales
    alias-free at a fraction of Lanczos' cost.
    """
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    if side == size and w == h:
        return image
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side),
                        reducing_gap=2.0)
