"""Task losses (the metrics that judge them live in metrics.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise MSE on heatmaps (paper 5.2), computed in fp32 whatever the autocast dtype."""
    return F.mse_loss(pred.float(), target.float())


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - concordance correlation, averaged over targets (columns); used for valence/arousal."""
    pred, target = pred.float(), target.float()
    pm, tm = pred.mean(0), target.mean(0)
    pv, tv = pred.var(0, unbiased=False), target.var(0, unbiased=False)
    cov = ((pred - pm) * (target - tm)).mean(0)
    ccc = 2 * cov / (pv + tv + (pm - tm) ** 2 + 1e-8)
    return (1 - ccc).mean()


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    if kind == "ccc":
        return ccc_loss(pred, target)
    if kind == "l2+ccc":
        return F.mse_loss(pred.float(), target.float()) + ccc_loss(pred, target)
    raise ValueError(f"unknown regression loss {kind!r} (l2, ccc, l2+ccc)")


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy against the teacher's softened distribution (classification distillation)."""
    t = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(t * F.log_softmax(logits.float() / temperature, dim=1)).sum(1).mean() * temperature ** 2
