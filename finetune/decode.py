"""Gaussian heatmap targets and their sub-pixel decoding.

Coordinates follow the label files (pixel i's centre at i). A heatmap pixel j at stride s
covers input pixels [j*s, (j+1)*s), so its centre is at (j + 0.5) * s - 0.5. Decoding takes the
arg-max and refines it with a parabola through the log-activations around it: on a Gaussian
this recovers the peak exactly, which matters at stride 4 (a heatmap pixel is 4 input pixels).
"""
from __future__ import annotations

import torch


def to_heatmap_coords(points: torch.Tensor, stride: int) -> torch.Tensor:
    return (points + 0.5) / stride - 0.5


def from_heatmap_coords(points: torch.Tensor, stride: int) -> torch.Tensor:
    return (points + 0.5) * stride - 0.5


def gaussian_heatmaps(points: torch.Tensor, size: tuple[int, int], stride: int, sigma: float) -> torch.Tensor:
    """(B, K, 2) input-pixel points -> (B, K, H, W) Gaussians of std `sigma` heatmap pixels."""
    h, w = size
    p = to_heatmap_coords(points.float(), stride)
    ys = torch.arange(h, device=points.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=points.device, dtype=torch.float32).view(1, 1, 1, w)
    dx = xs - p[..., 0, None, None]
    dy = ys - p[..., 1, None, None]
    return torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def decode_heatmaps(heatmaps: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, K, H, W) -> (B, K, 2) input-pixel points.

    The arg-max is refined per axis by the vertex of the parabola through the log-activations
    at the peak and its two neighbours — exact for a Gaussian, and clamped to half a heatmap
    pixel for anything else (a peak on the border is not refined along that axis).
    """
    b, k, h, w = heatmaps.shape
    hm = heatmaps.float().reshape(b * k, h, w)
    idx = hm.flatten(1).argmax(1)
    py, px = idx // w, idx % w
    rows = torch.arange(b * k, device=hm.device)
    log = torch.log(hm.clamp_min(1e-10))

    def offset(center, before, after, inside):
        denom = before - 2 * center + after
        off = torch.where(denom < -1e-12, 0.5 * (before - after) / denom.clamp(max=-1e-12), torch.zeros_like(denom))
        return torch.where(inside, off.clamp(-0.5, 0.5), torch.zeros_like(off))

    c = log[rows, py, px]
    inside_x = (px > 0) & (px < w - 1)
    inside_y = (py > 0) & (py < h - 1)
    dx = offset(c, log[rows, py, (px - 1).clamp(min=0)], log[rows, py, (px + 1).clamp(max=w - 1)], inside_x)
    dy = offset(c, log[rows, (py - 1).clamp(min=0), px], log[rows, (py + 1).clamp(max=h - 1), px], inside_y)
    pts = torch.stack([px.float() + dx, py.float() + dy], 1).reshape(b, k, 2)
    return from_heatmap_coords(pts, stride)
