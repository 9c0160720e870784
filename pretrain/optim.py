"""SGD + LARS and the SwAV learning-rate schedule (linear warm-up, then cosine to final_lr).

LARS as in apex's LARC wrapper that the reference uses (trust coefficient 0.001, no
clipping): each parameter's step is scaled by trust·‖w‖ / (‖g‖ + wd·‖w‖), with weight decay
folded into the gradient first. Written here because apex is not an option on current
PyTorch. Optionally BN and bias parameters get neither weight decay nor adaptation
(`exclude_bn_bias`), the common choice for large-batch self-supervised runs.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """Two groups when excluding: weights (decayed, LARS-adapted) and BN/bias (neither)."""
    if not exclude_bn_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad],
                 "weight_decay": weight_decay, "lars": True}]
    decay, plain = [], []
    for p in model.parameters():
        if p.requires_grad:
            (plain if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars": True},
            {"params": plain, "weight_decay": 0.0, "lars": False}]


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose per-parameter rate is scaled by the layer-wise trust ratio."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One multi-tensor update per group (`torch._foreach_*`): a ResNet-50 has ~160 tensors,
        and a loop over them costs ~10 small kernels each, which on a GPU is launch overhead
        that rivals the step's arithmetic. The trust ratios travel to the host as one list (one
        sync; the SwAV step already syncs for its statistics) so the scaling takes the fused path."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            wd, mom, lr = group["weight_decay"], group["momentum"], group["lr"]
            grads = [p.grad.float() for p in params]      # the same tensors when fp32: never written to
            weights = [p.float() for p in params]
            update = torch._foreach_add(grads, weights, alpha=wd) if wd else [g.clone() for g in grads]
            if group["lars"]:
                w_norm = torch.stack(torch._foreach_norm(weights))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = group["trust_coefficient"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                scale = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                torch._foreach_mul_(update, scale.tolist())
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            old = [i for i, b in enumerate(bufs) if b is not None]
            if old:
                kept = [bufs[i] for i in old]
                torch._foreach_mul_(kept, mom)
                torch._foreach_add_(kept, [update[i] for i in old])
            for i, b in enumerate(bufs):
                if b is None:   # first step: the buffer starts as the update, as in torch's SGD
                    bufs[i] = self.state[params[i]]["momentum_buffer"] = update[i].clone()
            if all(p.dtype == torch.float32 for p in params):
                torch._foreach_add_(params, bufs, alpha=-lr)
            else:
                for p, b in zip(params, bufs):
                    p.add_(b.to(p.dtype), alpha=-lr)
        return loss


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_lr: float,
          start_warmup: float = 0.0) -> float:
    """The reference schedule: linear from start_warmup to base_lr, then cosine to final_lr."""
    if step < warmup_steps:
        return start_warmup + (base_lr - start_warmup) * step / max(1, warmup_steps)
    t = step - warmup_steps
    span = max(1, total_steps - warmup_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * min(t, span) / span))


def scaled_lr(lr: float, global_batch: int, reference_batch: int) -> float:
    """Linear scaling: `lr` is tuned for `reference_batch` images per step across all ranks."""
    return lr * global_batch / reference_batch
