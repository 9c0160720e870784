"""SwAV multi-crop augmentation: a cheap per-image half and a batched half.

Per image (loader workers, PIL): decode — at a reduced JPEG scale (`draft`) when every crop of
this image is going to be downsampled by ≥2 anyway — and draw each crop's RandomResizedCrop
box from the sample's seeded RNG. Then either

* workers (`data.augment_on_device: false`, the CPU presets): cut every box straight to its
  output size (`Image.resize(box=...)`, antialiased), uint8; or
* the training device (`true`, the GPU presets): ship the decoded image and its boxes, and cut
  all crops of one size for the whole batch in one `torchvision.ops.roi_align` call (adaptive
  sampling averages ⌈box/size⌉² bilinear taps per output pixel: antialiased like PIL, mean
  difference 0.5/255). Workers then only decode, which keeps a many-GPU node's CPUs from
  being the bottleneck of 2×224 + 6×96 crops per image.

Per batch (vectorised torch, where the crops are): flip, colour jitter (brightness, contrast,
saturation 0.8·s, hue 0.2·s, with p 0.8), grayscale (p 0.2), Gaussian blur (σ ∈ [0.1, 2] px,
p 0.5) and normalisation, with per-sample random parameters. The four jitter ops and the
grayscale are all affine in RGB, so they are composed per image into one 3×3 matrix plus offset
and applied in a single pass (NVIDIA DALI's `color_twist` does the same). Deviations from
torchvision's per-image ColorJitter, all standard in batched augmentation: the order of the
four jitter ops is drawn per batch, hue is rotated in YIQ space rather than HSV, and values are
clamped to [0, 1] once after the composed op rather than after each one.
"""
from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
from PIL import Image

from facesift.pretrain.config import CropConfig

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


def decode_with_boxes(data: bytes, plan: list[tuple[int, float, float]],
                      rng: random.Random) -> tuple[Image.Image, list[tuple[float, float, float, float]]]:
    """Decode one JPEG (or any PIL format) as RGB and draw its crop boxes, in decoded pixels."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    boxes = [random_resized_box(width, height, (lo, hi), rng) for _, lo, hi in plan]
    # the smallest downscale any crop needs decides how coarse a JPEG decode can be
    reduce = min(min(b[2] - b[0], b[3] - b[1]) / size for (size, _, _), b in zip(plan, boxes))
    if img.format == "JPEG" and reduce >= 2:
        img.draft("RGB", (math.ceil(width / reduce), math.ceil(height / reduce)))
    img = img.convert("RGB")
    fx, fy = img.size[0] / width, img.size[1] / height
    return img, [(l * fx, t * fy, r * fx, b * fy) for l, t, r, b in boxes]


def geometric_crops(data: bytes, plan: list[tuple[int, float, float]], rng: random.Random) -> list[np.ndarray]:
    """Decode one image and cut all its crops (worker path): H×W×3 uint8 arrays."""
    img, boxes = decode_with_boxes(data, plan, rng)
    return [np.asarray(img.resize((size, size), Image.BILINEAR, box=box))
            for (size, _, _), box in zip(plan, boxes)]


def image_and_boxes(data: bytes, plan: list[tuple[int, float, float]],
                    rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Decode one image and draw its boxes (device path): H×W×3 uint8, n×4 float32 (x0 y0 x1 y1)."""
    img, boxes = decode_with_boxes(data, plan, rng)
    return np.asarray(img), np.asarray(boxes, np.float32)


def collate_crops(samples: list[list[np.ndarray]]) -> list[torch.Tensor]:
    """Per crop index, a B×3×H×W uint8 tensor (channels_last in memory: no copy per pixel)."""
    return [torch.from_numpy(np.stack([s[i] for s in samples])).permute(0, 3, 1, 2)
            for i in range(len(samples[0]))]


def collate_images(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """B×3×H×W uint8 images (zero-padded to the largest in the batch; boxes never reach the
    padding) and B×n×4 float32 boxes."""
    height = max(img.shape[0] for img, _ in samples)
    width = max(img.shape[1] for img, _ in samples)
    batch = np.zeros((len(samples), height, width, 3), np.uint8)
    for i, (img, _) in enumerate(samples):
        batch[i, :img.shape[0], :img.shape[1]] = img
    boxes = np.stack([b for _, b in samples])
    return torch.from_numpy(batch).permute(0, 3, 1, 2), torch.from_numpy(boxes)


def cut_crops(images: torch.Tensor, boxes: torch.Tensor,
              plan: list[tuple[int, float, float]]) -> list[torch.Tensor]:
    """All crops of a batch on the images' device: per crop index a B×3×s×s float tensor in [0, 1].

    One `roi_align` per crop size covers every image and every crop of that size."""
    from torchvision.ops import roi_align

    x = images.float().div_(255)
    b = images.shape[0]
    index = torch.arange(b, device=images.device, dtype=x.dtype)[:, None]
    out: list[torch.Tensor | None] = [None] * len(plan)
    for size in dict.fromkeys(p[0] for p in plan):
        which = [i for i, p in enumerate(plan) if p[0] == size]
        rois = torch.cat([torch.cat([index, boxes[:, i].to(x.dtype)], dim=1) for i in which])
        cut = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        for j, i in enumerate(which):
            out[i] = cut[j * b:(j + 1) * b]
    return out  # type: ignore[return-value]


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


def colour_matrix(channel_means: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
                  saturation: torch.Tensor, hue: torch.Tensor, order: list[int],
                  grayscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image affine colour map (B×3×3 matrix, B×3 offset): the four jitter ops (0
    brightness, 1 contrast, 2 saturation, 3 hue) in `order`, then grayscale where `grayscale`.

    Each op maps the current colour affinely — brightness scales, contrast blends with the
    current mean grey (known from the input's `channel_means` through the map so far),
    saturation blends with the pixel's grey, hue rotates the chroma plane of YIQ, grayscale
    projects onto grey — so their composition is one affine map."""
    b, dev = channel_means.shape[0], channel_means.device
    grey_row = torch.tensor(_GRAY, device=dev)
    to_grey = torch.ones(3, 1, device=dev) * grey_row[None]                  # 3×3: every channel ← grey
    eye = torch.eye(3, device=dev).expand(b, 3, 3)
    no_offset = torch.zeros(b, 3, device=dev)
    mat, off = eye.clone(), no_offset
    for op in order:
        if op == 0:
            step, add = brightness.view(b, 1, 1) * eye, no_offset
        elif op == 1:
            mean_grey = ((mat @ channel_means.unsqueeze(2)).squeeze(2) + off) @ grey_row  # B
            step, add = contrast.view(b, 1, 1) * eye, ((1 - contrast) * mean_grey)[:, None].expand(b, 3)
        elif op == 2:
            k = saturation.view(b, 1, 1)
            step, add = k * eye + (1 - k) * to_grey, no_offset
        else:
            theta = hue * 2 * math.pi
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0] = 1
            cos, sin = theta.cos(), theta.sin()
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            step, add = _YIQ2RGB.to(dev) @ rot @ _RGB2YIQ.to(dev), no_offset
        mat, off = step @ mat, (step @ off.unsqueeze(2)).squeeze(2) + add
    gray = grayscale.view(b, 1, 1)
    return torch.where(gray, to_grey @ mat, mat), torch.where(gray.view(b, 1), off @ to_grey.T, off)


def photometric(x: torch.Tensor, cfg: CropConfig, gen: torch.Generator) -> torch.Tensor:
    """Flip, colour jitter, grayscale, blur and normalise a batch B×3×H×W (uint8 0–255, or float
    in [0, 1]) → normalised float, channels_last.

    The composed colour map is one batched 3×3 matmul over each image's H·W pixels, with the
    1/255 scaling folded into it; the normalisation is folded into the channels_last copy."""
    b, _, h, w = x.shape
    dev = x.device
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    x = x.contiguous().float()

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen, device=gen.device) * (hi - lo) + lo).to(dev)

    def coin(p: float) -> torch.Tensor:
        return u(0, 1) < p

    flip = coin(cfg.flip_p).nonzero().squeeze(1)
    s = cfg.jitter_strength
    jitter = coin(cfg.jitter_p)
    one = torch.ones(b, device=dev)
    bri, con, sat = (torch.where(jitter, u(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s), one) for _ in range(3))
    hue = torch.where(jitter, u(-0.2 * s, 0.2 * s), torch.zeros(b, device=dev))
    order = torch.randperm(4, generator=gen, device=gen.device).tolist()
    gray = coin(cfg.grayscale_p)
    blur = coin(cfg.blur_p).nonzero().squeeze(1)
    sigma = u(*cfg.blur_sigma)[blur]

    if jitter.any() or gray.any():
        pixels = x.view(b, 3, h * w)
        mat, off = colour_matrix(pixels.mean(dim=2) * scale, bri, con, sat, hue, order, gray)
        x = torch.baddbmm(off.view(b, 3, 1), mat * scale, pixels).clamp_(0, 1).view(b, 3, h, w)
    elif scale != 1.0:  # no colour op drawn for this batch (e.g. the geometric-only CPU preset)
        x.mul_(scale)
    if len(flip):
        x[flip] = x[flip].flip(-1)
    if len(blur):
        x[blur] = _gaussian_blur(x[blur], sigma, cfg.blur_sigma[1])
    mean = torch.tensor(cfg.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=dev).view(1, 3, 1, 1)
    out = torch.empty_like(x, memory_format=torch.channels_last)
    return torch.sub(x, mean, out=out).div_(std)


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
