"""What `facesift embed` turns an image into: pooled backbone features or a weight-free embedding.

With a backbone, the pooled ResNet features (what SwAV learned). Without one, a weight-free
embedding made for near-duplicate detection (no weights can be assumed present):
  * `hog` (default): the grey image reduced to 32x32, gradient-orientation histograms
    (9 unsigned bins) over an 8x8 grid of 4x4-pixel cells, every pixel voting bilinearly into
    the nearest cells and bins, weighted by a centred Gaussian (sigma 0.6 of the half-width:
    the face counts, the background and the borders a crop changes count less), square-rooted
    and L2-normalised (576-d). Gradients ignore brightness, the normalisation ignores contrast,
    soft binning tolerates the few-pixel shifts of a re-crop, a resize or alignment jitter,
    and JPEG blocking barely moves them — while a different expression or light direction does.
  * `dct`: the 2-D DCT of the 32x32 grey image, its 16x16 lowest frequencies without DC,
    L2-normalised (a continuous pHash).
Measured (after the redundancy stage's mean-centring, pair precision / recall): on aligned
face crops from the demo's sandbox (variants of shared source photos, curated with MTCNN),
`hog` at cosine 0.85 gives 0.96 / 0.67 (0.80: 0.92 / 0.84), `dct` at its best 0.85 / 0.79; on
the tests' unaligned known-duplicate set with the Yale lighting/expression hard negatives,
`hog` at 0.85 gives 0.38 / 0.58 and pHash at Hamming 4 0.33 / 0.43.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facesift.analysis.config import EmbedConfig
from facesift.common.images import IMAGENET_MEAN, IMAGENET_STD
from facesift.common.runtime import resolve_device


class EmbedError(RuntimeError):
    """A problem the user must fix (bad input, mismatched resume); shown without a traceback."""


def hog_embedding(image: Image.Image, size: int = 32, cell: int = 4, bins: int = 9,
                  sigma: float = 0.6) -> np.ndarray:
    """Soft-binned, centre-weighted gradient-orientation histograms (see module docstring)."""
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    gy, gx = np.gradient(grey)
    c = (np.arange(size) - (size - 1) / 2) / (size / 2)
    mag = np.hypot(gx, gy) * np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma ** 2))
    pos = (np.arctan2(gy, gx) % np.pi) / np.pi * bins
    b0 = np.floor(pos).astype(np.int64) % bins
    w_ang = pos - np.floor(pos)
    cells = size // cell
    # each pixel votes into the 2x2 nearest cell centres (bilinear) and 2 nearest orientation bins
    centre = (np.arange(size) + 0.5) / cell - 0.5
    c0 = np.floor(centre).astype(np.int64)
    w_pos = centre - c0
    hist = np.zeros((cells + 2) * (cells + 2) * bins)
    for dy in (0, 1):
        wy = (w_pos if dy else 1 - w_pos)[:, None]
        for dx in (0, 1):
            wx = (w_pos if dx else 1 - w_pos)[None, :]
            base = ((c0[:, None] + 1 + dy) * (cells + 2) + (c0[None, :] + 1 + dx)) * bins
            w = mag * wy * wx
            hist += np.bincount((base + b0).ravel(), (w * (1 - w_ang)).ravel(), len(hist))
            hist += np.bincount((base + (b0 + 1) % bins).ravel(), (w * w_ang).ravel(), len(hist))
    hist = np.sqrt(hist.reshape(cells + 2, cells + 2, bins)[1:-1, 1:-1].reshape(-1)).astype(np.float32)
    norm = float(np.linalg.norm(hist))
    return hist / norm if norm > 0 else hist


def dct_embedding(image: Image.Image, size: int = 32, keep: int = 12) -> np.ndarray:
    """Low-frequency DCT of the grey image, DC dropped, L2-normalised (see module docstring)."""
    from scipy.fft import dctn
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    coeffs = dctn(grey, norm="ortho")[:keep, :keep].reshape(-1)[1:]
    norm = float(np.linalg.norm(coeffs))
    return coeffs / norm if norm > 0 else coeffs


def cnn_input(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to `size`, centre-crop square, HWC uint8."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                        Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


class Embedder:
    """Turns decoded images into L2-normalised float32 rows; `prepare` runs in decode threads."""

    def __init__(self, cfg: EmbedConfig):
        self.cfg = cfg
        if cfg.backbone:
            import torch
            from facesift.pretrain.backbone import load_backbone, infer_arch, clean_state_dict
            try:
                self.device = resolve_device(cfg.device)
            except RuntimeError as exc:  # cuda asked for, none here: the user's to fix
                raise EmbedError(str(exc)) from None
            self.model = load_backbone(cfg.backbone, arch=cfg.arch).eval().to(self.device)
            if cfg.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.dim = int(self.model.feature_dim)
            arch = cfg.arch or infer_arch(clean_state_dict(
                torch.load(cfg.backbone, map_location="cpu", weights_only=True)))
            self.name = f"{arch}:{Path(cfg.backbone).name}@{cfg.image_size}"
        elif cfg.embedding == "hog":
            self.device, self.model = "cpu", None
            self.dim = (cfg.hog_size // cfg.hog_cell) ** 2 * 9
            self.name = f"hog{cfg.hog_size}/{cfg.hog_cell}-soft-g0.6"
        elif cfg.embedding == "dct":
            self.device, self.model = "cpu", None
            self.dim = cfg.dct_keep * cfg.dct_keep - 1
            self.name = f"dct{cfg.dct_size}x{cfg.dct_keep}"
        else:
            raise EmbedError(f"embedding must be hog or dct (or give --backbone), not {cfg.embedding!r}")

    def prepare(self, image: Image.Image) -> np.ndarray:
        if self.model is None:
            if self.cfg.embedding == "hog":
                return hog_embedding(image, self.cfg.hog_size, self.cfg.hog_cell)
            return dct_embedding(image, self.cfg.dct_size, self.cfg.dct_keep)
        return cnn_input(image, self.cfg.image_size)

    def __call__(self, prepared: list[np.ndarray]) -> np.ndarray:
        if self.model is None:
            return np.stack(prepared).astype(np.float32)
        import torch
        batch = torch.from_numpy(np.stack(prepared)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(IMAGENET_MEAN, device=batch.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=batch.device)[None, :, None, None]
        batch = (batch - mean) / std
        if self.cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        use_amp = self.cfg.amp and batch.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=use_amp):
            feats = self.model(batch).float()
        feats = torch.nn.functional.normalize(feats, dim=1)
        return feats.cpu().numpy()
