"""Per-sample transforms: one affine warp moves the image and its landmarks together.

Landmark models must localise, not memorise a mean position (landmarks5's two parts are
cropped differently), so training samples get a random scale, rotation, translation and flip;
a flip also swaps left/right points (eyes, mouth corners), otherwise the model learns that a
left eye may sit on either side. Coordinates use the convention of the label files: the centre
of pixel i is at i, so a flip maps x to W - 1 - x.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from facesift.common.config import bounded
from facesift.common.images import IMAGENET_MEAN as MEAN, IMAGENET_STD as STD
from facesift.finetune.datasets import FLIP_PAIRS, flip_pairs



@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.8, 1.25)   # zoom factor range (>1 = face larger in the crop)
    rotate: float = bounded(20.0, 0.0, 180.0)   # max degrees either way
    translate: float = bounded(0.08, 0.0, 1.0)  # max shift, fraction of the output side
    flip: float = bounded(0.5, 0.0, 1.0)        # probability of a horizontal flip
    box_margin: float = bounded(1.3, 0.1)       # crop side / landmark box side when no box is given
    # photometric, landmark tasks only (0 = off): faces from another source differ in colour,
    # contrast and sharpness as much as in framing
    color: float = bounded(0.0, 0.0, 1.0)       # brightness/contrast/saturation jitter ±color, hue ±color/4
    grayscale: float = bounded(0.0, 0.0, 1.0)   # probability of a grayscale image
    blur: float = bounded(0.0, 0.0, 1.0)        # probability of a Gaussian blur (σ 0.1–1 px of the output)


def to_tensor(image: Image.Image) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (arr - mean) / std


def box_from_points(points: np.ndarray, margin: float = 1.3) -> tuple[float, float, float]:
    """(cx, cy, side) of a square around the points, enlarged by `margin` (continuous coords)."""
    lo, hi = points.min(0), points.max(0)
    c = (lo + hi) / 2 + 0.5
    return float(c[0]), float(c[1]), float(max(hi - lo) * margin)


def image_box(image: Image.Image) -> tuple[float, float, float]:
    w, h = image.size
    return w / 2, h / 2, float(max(w, h))


def affine_matrix(box: Sequence[float], out_size: int, scale: float = 1.0, angle: float = 0.0,
                  shift: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
    """2x3 map from source to output continuous coordinates (box centre -> output centre)."""
    cx, cy, side = box
    s = out_size / side * scale
    a = math.radians(angle)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    tx = out_size / 2 + shift[0] * out_size
    ty = out_size / 2 + shift[1] * out_size
    return np.array([[cos, -sin, tx - cos * cx + sin * cy],
                     [sin, cos, ty - sin * cx - cos * cy]], dtype=np.float64)


def warp(image: Image.Image, points: np.ndarray | None, matrix: np.ndarray, out_size: int,
         flip: bool = False) -> tuple[Image.Image, np.ndarray | None]:
    """Apply `matrix` (and an optional flip after it) to the image and the points."""
    full = np.vstack([matrix, [0, 0, 1]])
    if flip:
        full = np.array([[-1, 0, out_size], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ full
    inv = np.linalg.inv(full)
    out = image.transform((out_size, out_size), Image.AFFINE, data=tuple(inv[:2].ravel()),
                          resample=Image.BILINEAR)
    if points is None:
        return out, None
    p = np.asarray(points, dtype=np.float64) + 0.5
    p = p @ full[:2, :2].T + full[:2, 2] - 0.5
    if flip:
        p = flip_points(p)
    return out, p.astype(np.float32)


def flip_points(points: np.ndarray) -> np.ndarray:
    """Swap left/right correspondences after a mirror (the coordinates are already mirrored)."""
    out = points.copy()
    for a, b in flip_pairs(len(points)):
        out[[a, b]] = points[[b, a]]
    return out


def photometric(image: Image.Image, cfg: AugmentConfig, rng: random.Random) -> Image.Image:
    """Colour jitter, grayscale and blur with `rng` (the worker's seeded `random`), in PIL."""
    from PIL import ImageEnhance, ImageFilter
    if cfg.color > 0:
        ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
        rng.shuffle(ops)
        for op in ops:
            image = op(image).enhance(rng.uniform(1 - cfg.color, 1 + cfg.color))
        shift = rng.uniform(-cfg.color / 4, cfg.color / 4)
        if shift:
            h, s, v = image.convert("HSV").split()
            h = h.point(lambda x: (x + int(round(shift * 255))) % 256)
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
    if cfg.grayscale and rng.random() < cfg.grayscale:
        image = image.convert("L").convert("RGB")
    if cfg.blur and rng.random() < cfg.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.1, 1.0)))
    return image


def random_params(cfg: AugmentConfig, rng: random.Random) -> dict:
    lo, hi = cfg.scale   # log-uniform: zooming in x2 is as likely as zooming out x2
    return {"scale": math.exp(rng.uniform(math.log(lo), math.log(hi))),
            "angle": rng.uniform(-cfg.rotate, cfg.rotate),
            "shift": (rng.uniform(-cfg.translate, cfg.translate), rng.uniform(-cfg.translate, cfg.translate)),
            "flip": rng.random() < cfg.flip}


class LandmarkTransform:
    """(image, record) -> (tensor, points in output pixels); random warp when `train`."""

    def __init__(self, size: int, cfg: AugmentConfig, train: bool):
        self.size, self.cfg, self.train = size, cfg, train

    def __call__(self, image: Image.Image, rec: dict):
        pts = rec["target"]
        box = rec.get("box") or image_box(image)
        params = random_params(self.cfg, random) if self.train else {"flip": False}
        flip = params.pop("flip")
        if flip and len(pts) not in FLIP_PAIRS:
            flip = False
        m = affine_matrix(box, self.size, **params)
        out, p = warp(image, pts, m, self.size, flip=flip)
        if self.train:
            out = photometric(out, self.cfg, random)
        return to_tensor(out), torch.from_numpy(p)


class ImageTransform:
    """(image, record) -> (tensor, target) for whole-face tasks: resize, and when training a
    mild random scale/shift/rotation and a flip (identity, expression and AU labels survive it)."""

    def __init__(self, size: int, cfg: AugmentConfig, train: bool):
        self.size, self.cfg, self.train = size, cfg, train

    def __call__(self, image: Image.Image, rec: dict):
        box = rec.get("box") or image_box(image)
        if self.train:
            params = random_params(self.cfg, random)
            params["scale"] = 1.0 + (params["scale"] - 1.0) * 0.5
            params["angle"] *= 0.5
            flip = params.pop("flip")
        else:
            params, flip = {}, False
        out, _ = warp(image, None, affine_matrix(box, self.size, **params), self.size, flip=flip)
        target = rec.get("target")
        if target is None:
            target = -1
        target = torch.as_tensor(np.asarray(target))
        return to_tensor(out), target
