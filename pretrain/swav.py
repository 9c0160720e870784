"""The SwAV method (Caron et al. 2020) in one module: head, prototypes, codes, loss, queue.

Follows facebookresearch/swav `main_swav.py` step for step so a reader can check it against
the paper (Bulat et al., eq. 1) and the reference: features are L2-normalised projections,
scores are their dot products with L2-normalised prototypes, codes come from a few
Sinkhorn-Knopp iterations (rows summed across ranks, columns local, always in fp32), and each
crop's softmax over prototypes (temperature 0.1) predicts the code of the *other* views.
The training loop, data and DDP plumbing live in train.py / data.py / distributed.py.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facesift.pretrain.backbone import build_resnet
from facesift.common.runtime import process_group_world


class SwAVModel(nn.Module):
    """ResNet trunk + projection head (Linear-BN-ReLU-Linear) + prototypes (Linear, no bias)."""

    def __init__(self, arch: str = "resnet50", hidden_mlp: int = 2048, feat_dim: int = 128,
                 nmb_prototypes: int = 3000):
        super().__init__()
        self.backbone = build_resnet(arch)
        dim = self.backbone.feature_dim
        if hidden_mlp > 0:
            self.projection_head = nn.Sequential(
                nn.Linear(dim, hidden_mlp), nn.BatchNorm1d(hidden_mlp), nn.ReLU(inplace=True),
                nn.Linear(hidden_mlp, feat_dim))
        else:
            self.projection_head = nn.Linear(dim, feat_dim)
        self.prototypes = nn.Linear(feat_dim, nmb_prototypes, bias=False)

    def forward_trunk(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """Pooled trunk features for all crops; consecutive crops of one size share one pass.

        Grouping by resolution is what makes multi-crop affordable: 2 global + 6 local crops
        cost two trunk calls instead of eight, and BatchNorm sees one large batch per size.
        """
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            x = torch.cat(crops[start:end]) if end - start > 1 else crops[start]
            outputs.append(self.backbone(x))
            start = end
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    def forward(self, crops: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embeddings, prototype scores), rows ordered crop by crop."""
        feats = self.forward_trunk(crops)
        z = F.normalize(self.projection_head(feats), dim=1, p=2)
        return z, prototype_scores(z, self.prototypes.weight)


@contextmanager
def exact_matmul(device_type: str):
    """fp32 matrix products inside a bf16 autocast region: autocast off and TF32 off. The scores
    feed Sinkhorn's exp(score / ε) with ε = 0.05, which turns bf16's ~4e-3 relative error into
    errors of 0.04–0.08 in the codes."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def prototype_scores(z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """z · Wᵀ in fp32 whatever the surrounding autocast (gradients flow to both)."""
    with exact_matmul(z.device.type):
        return z.float() @ weight.float().t()


@torch.no_grad()
def normalize_prototypes(model: SwAVModel) -> None:
    """Project the prototypes back onto the unit sphere (done before every step, no grad)."""
    w = model.prototypes.weight
    w.copy_(F.normalize(w.data.float(), dim=1, p=2).to(w.dtype))


def drop_prototype_grads(model: nn.Module) -> None:
    """While `freeze_prototypes_niters` runs, the prototypes do not move (stabilises the start)."""
    for name, p in model.named_parameters():
        if "prototypes" in name:
            p.grad = None


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if process_group_world() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _logsumexp(x: torch.Tensor, dim: int | None, across_ranks: bool) -> torch.Tensor:
    """log Σ exp(x) over `dim` (all elements if None), optionally also summed over ranks."""
    m = x.amax(dim=dim, keepdim=dim is not None) if dim is not None else x.max()
    if across_ranks:
        m = _all_reduce(m.clone(), dist.ReduceOp.MAX)
    s = torch.exp(x - m).sum(dim=dim, keepdim=dim is not None) if dim is not None else torch.exp(x - m).sum()
    if across_ranks:
        s = _all_reduce(s)
    return m + torch.log(s)


@torch.no_grad()
def distributed_sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Codes Q (B×K, rows sum to 1) for local scores B×K, equipartitioned over the global batch.

    The reference's algorithm: Q = exp(scores/ε)ᵀ normalised to sum 1; then `iterations` times
    each prototype's row gets total mass 1/K (row sums all-reduced over ranks) and each
    sample's column 1/B_global (local); finally columns are scaled to sum to 1. Computed in
    fp32 outside autocast, and in the log domain (every normalisation is a log-sum-exp), which
    is the same arithmetic but cannot overflow or divide by an underflowed zero whatever the
    score range or ε.
    """
    with torch.autocast(device_type=scores.device.type, enabled=False):
        distributed = process_group_world() > 1
        log_q = (scores.detach().float() / epsilon).t()  # K × B_local
        n_protos, n_samples = log_q.shape[0], log_q.shape[1] * process_group_world()
        log_q = log_q - _logsumexp(log_q, None, distributed)
        for _ in range(iterations):
            log_q = log_q - _logsumexp(log_q, 1, distributed) - math.log(n_protos)
            log_q = log_q - _logsumexp(log_q, 0, False) - math.log(n_samples)
        return torch.exp(log_q + math.log(n_samples)).t()


@dataclass
class SwAVStats:
    """What the collapse watch looks at, for one step."""
    loss: float
    entropy: float          # mean entropy of the (soft) codes, nats; ln K = uniform, 0 = one-hot
    prototypes_used: int    # distinct argmax prototypes over the batch's assigned crops
    max_share: float        # largest fraction of samples sharing one argmax prototype


def swav_loss(z: torch.Tensor, scores: torch.Tensor, batch_size: int, nmb_crops_total: int,
              prototypes: torch.Tensor, crops_for_assign: tuple[int, ...] = (0, 1),
              temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
              queue: torch.Tensor | None = None, use_queue: bool = False
              ) -> tuple[torch.Tensor, bool, SwAVStats]:
    """Swapped-prediction loss over `crops_for_assign` (eq. 1), updating `queue` in place.

    `z`/`scores`: (nmb_crops_total·B)×D and ×K, crop-major. `queue` (len(crops_for_assign)×L×D
    or None) holds past embeddings of the assigned crops; as in the reference it is only
    used once its last row is non-zero (full) — or once it was used this epoch — and the
    current batch's codes are the last B rows of Sinkhorn run on [queue scores; batch scores].
    Returns (loss, use_queue for the next step, stats).
    """
    bs = batch_size
    loss = scores.new_zeros((), dtype=torch.float32)
    entropies, used, shares = [], set(), []
    z = z.detach()
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = scores[bs * crop_id: bs * (crop_id + 1)].detach().float()
            if queue is not None:
                if use_queue or not torch.all(queue[i, -1, :] == 0):
                    use_queue = True
                    out = torch.cat((prototype_scores(queue[i], prototypes.detach()), out))
                queue[i, bs:] = queue[i, :-bs].clone()
                queue[i, :bs] = z[crop_id * bs: (crop_id + 1) * bs].to(queue.dtype)
            q = distributed_sinkhorn(out, epsilon, sinkhorn_iterations)[-bs:]
            entropies.append(float(-(q * torch.log(q.clamp_min(1e-12))).sum(dim=1).mean()))
            top = q.argmax(dim=1)
            used.update(top.tolist())
            shares.append(float(torch.bincount(top).max()) / bs)
        subloss = scores.new_zeros((), dtype=torch.float32)
        for v in range(nmb_crops_total):
            if v == crop_id:
                continue
            x = scores[bs * v: bs * (v + 1)].float() / temperature
            subloss = subloss - torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss = loss + subloss / (nmb_crops_total - 1)
    loss = loss / len(crops_for_assign)
    stats = SwAVStats(loss=float(loss.detach()), entropy=sum(entropies) / len(entropies),
                      prototypes_used=len(used), max_share=max(shares))
    return loss, use_queue, stats


def make_queue(length: int, n_assign: int, feat_dim: int, global_batch: int, world_size: int,
               device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Zeros of shape (n_assign, per-rank length, feat_dim); length rounded down to a multiple
    of the global batch as in the reference, so it turns over in whole batches."""
    length -= length % global_batch
    if length <= 0:
        return None
    return torch.zeros(n_assign, length // world_size, feat_dim, device=device)


class CollapseWatch:
    """Flags the classic SwAV failure: loss parked at ln K, or all samples on few prototypes.

    SwAV's loss starts near ln K (uniform predictions against equipartitioned codes); a run
    that stays there for `patience` steps after warm-up learns nothing. Assignment collapse
    shows up as one prototype taking a large share of every batch.
    """

    def __init__(self, n_prototypes: int, warmup_steps: int = 200, patience: int = 100,
                 rel_tol: float = 0.02, max_share: float = 0.5):
        self.ln_k = math.log(n_prototypes)
        self.warmup_steps, self.patience, self.rel_tol, self.max_share = warmup_steps, patience, rel_tol, max_share
        self.flat_steps = 0
        self.concentrated_steps = 0
        self.warnings: list[str] = []

    def update(self, step: int, stats: SwAVStats) -> str | None:
        if step < self.warmup_steps:
            return None
        at_ln_k = abs(stats.loss - self.ln_k) <= self.rel_tol * self.ln_k
        self.flat_steps = self.flat_steps + 1 if at_ln_k else 0
        self.concentrated_steps = self.concentrated_steps + 1 if stats.max_share > self.max_share else 0
        message = None
        if self.flat_steps == self.patience:
            message = (f"COLLAPSE? loss has stayed at ln K = {self.ln_k:.3f} for {self.patience} steps "
                       f"(now {stats.loss:.3f}): the network is not learning. Check the learning rate, "
                       f"freeze_prototypes_niters, epsilon and the augmentations.")
        elif self.concentrated_steps == self.patience:
            message = (f"COLLAPSE? {stats.max_share:.0%} of each batch is assigned to one prototype "
                       f"({stats.prototypes_used} in use) for {self.patience} steps: the codes have "
                       f"concentrated. Lower epsilon only with care; check batch size and the queue.")
        if message:
            self.warnings.append(message)
        return message
