"""SwAV multi-crop augmentation, split into a cheap per-image half and a batched half.

Per image (in loader workers, PIL): decode — at a reduced JPEG scale (`draft`) when every crop
of this image is going to be downsampled by ≥2 anyway — then for each crop one
RandomResizedCrop box resized straight to its output size (`Image.resize(box=...)`, which
antialiases), kept as uint8.

Per batch (vectorised torch, in the workers or on the training device): horizontal flip,
colour jitter (brightness, contrast, saturation 0.8·s, hue 0.2·s, applied with p 0.8),
grayscale (p 0.2), Gaussian blur (σ ∈ [0.1, 2] px, p 0.5) and normalisation, with per-sample
random parameters. Doing the photometric half once per batch instead of once per crop is
what keeps the input pipeline close to JPEG-decode speed. Two deviations from torchvision's
per-image ColorJitter, both standard in batched augmentation (DALI, kornia): the order of
the four jitter ops is drawn per batch rather than per image, and hue is rotated in YIQ space
rather than HSV.
"""
from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
from PIL import Image

from pretrain.config import CropConfig

_GRAY = (0.299, 0.587, 0.114)
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def crop_plan(cfg: CropConfig) -> list[tuple[int, float, float]]:
    """(size, min_scale, max_scale) for every crop, in crop order (globals first)."""
    lengths = {len(cfg.nmb_crops), len(cfg.size_crops), len(cfg.min_scale_crops), len(cfg.max_scale_crops)}
    if len(lengths) != 1:
        raise ValueError("crops: nmb_crops, size_crops, min_scale_crops and max_scale_crops need equal lengths")
    return [(s, lo, hi) for n, s, lo, hi in zip(cfg.nmb_crops, cfg.size_crops, cfg.min_scale_crops,
                                                cfg.max_scale_crops) for _ in range(n)]


def random_resized_box(width: int, height: int, scale: tuple[float, float], rng: random.Random,
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box (left, top, right, bottom), drawn from `rng`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def geometric_crops(data: bytes, plan: list[tuple[int, float, float]], rng: random.Random) -> list[np.ndarray]:
    """Decode one JPEG (or any PIL format) and cut all its crops: H×W×3 uint8 arrays."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    boxes = [random_resized_box(width, height, (lo, hi), rng) for _, lo, hi in plan]
    # the smallest downscale any crop needs decides how coarse a JPEG decode can be
    reduce = min(min(b[2] - b[0], b[3] - b[1]) / size for (size, _, _), b in zip(plan, boxes))
    if img.format == "JPEG" and reduce >= 2:
        img.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
    img = img.convert("RGB")
    fx, fy = img.size[0] / width, img.size[1] / height
    out = []
    for (size, _, _), (l, t, r, b) in zip(plan, boxes):
        crop = img.resize((size, size), Image.BILINEAR, box=(l * fx, t * fy, r * fx, b * fy))
        out.append(np.asarray(crop))
    return out


def collate_crops(samples: list[list[np.ndarray]]) -> list[torch.Tensor]:
    """Per crop index, a B×3×H×W uint8 tensor (channels_last in memory: no copy per pixel)."""
    return [torch.from_numpy(np.stack([s[i] for s in samples])).permute(0, 3, 1, 2)
            for i in range(len(samples[0]))]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 0] * _GRAY[0] + x[:, 1] * _GRAY[1] + x[:, 2] * _GRAY[2]).unsqueeze(1)


def _bshape(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blur_matrices(n: int, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """m×n×n matrices applying a 1-D Gaussian (one σ each) with reflect padding along an axis."""
    offsets = torch.arange(-radius, radius + 1, device=sigma.device)
    taps = torch.exp(-0.5 * (offsets[None].float() / sigma[:, None]) ** 2)
    taps = taps / taps.sum(dim=1, keepdim=True)                      # m × T
    src = torch.arange(n, device=sigma.device)[:, None] + offsets[None]  # n × T, then reflect
    src = torch.where(src < 0, -src, src)
    src = torch.where(src >= n, 2 * (n - 1) - src, src)
    m = sigma.shape[0]
    mat = torch.zeros(m, n, n, device=sigma.device)
    return mat.scatter_add_(2, src.expand(m, n, -1), taps[:, None, :].expand(m, n, -1))


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, one σ per sample, as two batched matmuls (fast on CPU and GPU)."""
    m, c, h, w = x.shape
    radius = min(int(math.ceil(3 * max_sigma)), min(h, w) - 1)
    if radius < 1 or m == 0:
        return x
    mw = _blur_matrices(w, sigma, radius)
    mh = mw if h == w else _blur_matrices(h, sigma, radius)
    y = torch.bmm(x.reshape(m, c * h, w), mw.transpose(1, 2))                 # along W
    y = y.view(m, c, h, w).permute(0, 2, 1, 3).reshape(m, h, c * w)
    y = torch.bmm(mh, y)                                                       # along H
    return y.view(m, h, c, w).permute(0, 2, 1, 3)


def photometric(x: torch.Tensor, cfg: CropConfig, gen: torch.Generator) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur and normalise a uint8 batch B×3×H×W → float."""
    b = x.shape[0]
    dev = x.device
    x = x.contiguous().float().div_(255)

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen, device=gen.device) * (hi - lo) + lo).to(dev)

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen, device=gen.device) < p).to(dev)

    flip = coin(cfg.flip_p).nonzero().squeeze(1)
    x[flip] = x[flip].flip(-1)

    s = cfg.jitter_strength
    jitter = coin(cfg.jitter_p)
    bri, con, sat = (torch.where(jitter, u(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s), torch.ones(b, device=dev))
                     for _ in range(3))
    hue = torch.where(jitter, u(-0.2 * s, 0.2 * s), torch.zeros(b, device=dev))
    for op in torch.randperm(4, generator=gen, device=gen.device).tolist():
        if op == 0:
            x = (x * _bshape(bri)).clamp_(0, 1)
        elif op == 1:
            mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (x * _bshape(con) + mean * (1 - _bshape(con))).clamp_(0, 1)
        elif op == 2:
            x = (x * _bshape(sat) + _gray(x) * (1 - _bshape(sat))).clamp_(0, 1)
        else:
            theta = hue * 2 * math.pi
            cos, sin = torch.cos(theta), torch.sin(theta)
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = _YIQ2RGB.to(dev) @ rot @ _RGB2YIQ.to(dev)
            x = torch.einsum("bij,bjhw->bihw", m, x).clamp_(0, 1)

    gray = coin(cfg.grayscale_p).nonzero().squeeze(1)
    x[gray] = _gray(x[gray]).expand(-1, 3, -1, -1)

    blur = coin(cfg.blur_p).nonzero().squeeze(1)
    sigma = u(cfg.blur_sigma[0], cfg.blur_sigma[1])[blur]
    x[blur] = _gaussian_blur(x[blur], sigma, cfg.blur_sigma[1])

    mean = torch.tensor(cfg.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=dev).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def augment_batch(crops: list[torch.Tensor], cfg: CropConfig, gen: torch.Generator) -> list[torch.Tensor]:
    """Photometric half for every crop; crops of one size are processed as one tensor."""
    out: list[torch.Tensor] = []
    start = 0
    while start < len(crops):
        end = start
        while end < len(crops) and crops[end].shape == crops[start].shape:
            end += 1
        done = photometric(torch.cat(crops[start:end]), cfg, gen)
        out.extend(done.chunk(end - start))
        start = end
    return out
