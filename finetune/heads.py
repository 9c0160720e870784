"""Task heads on a torchvision ResNet trunk, and the model that joins them.

The landmark head follows the paper (5.2): three 1x1 conv layers of 256 channels, each followed
by bilinear x2 up-sampling, with higher-resolution features from layer3/layer2/layer1 projected
(1x1) and summed in, then a 1x1 conv to one heatmap per point — output stride 4. It needs the
intermediate stages, so `trunk_stages` runs the trunk's submodules itself rather than forward().
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def trunk_stages(trunk: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """[layer1, layer2, layer3, layer4] outputs of a torchvision ResNet (strides 4, 8, 16, 32)."""
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
    out = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(trunk, name)(x)
        out.append(x)
    return out


def stage_channels(trunk: nn.Module) -> list[int]:
    """Output channels of layer1..layer4 (works for basic and bottleneck blocks)."""
    chans = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        block = getattr(trunk, name)[-1]
        last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
        chans.append(last_bn.num_features)
    return chans


class HeatmapHead(nn.Module):
    """layer4 -> [1x1 conv 256, up x2, + skip] x3 -> 1x1 conv to K heatmaps at stride 4."""

    stride = 4

    def __init__(self, channels: list[int], num_points: int, width: int = 256):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.convs = nn.ModuleList([nn.Conv2d(c4, width, 1), nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1)])
        self.norms = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(3)])
        self.skips = nn.ModuleList([nn.Conv2d(c, width, 1) for c in (c3, c2, c1)])
        self.out = nn.Conv2d(width, num_points, 1)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        x = stages[3]
        for conv, norm, skip, feat in zip(self.convs, self.norms, self.skips, (stages[2], stages[1], stages[0])):
            x = F.relu(norm(conv(x)))
            x = F.interpolate(x, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            x = x + skip(feat)
        return self.out(F.relu(x))


class LinearHead(nn.Module):
    """Pooled layer4 features -> a linear layer (classification logits or regression values)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(stages[3], 1), 1))


class CosFaceHead(nn.Module):
    """Embedding = a linear layer on pooled features (paper 5.1); CosFace logits
    s * (cos(theta) - m * onehot) against class prototypes, used by the loss only."""

    def __init__(self, in_dim: int, num_classes: int, embed_dim: int = 512, scale: float = 30.0,
                 margin: float = 0.35):
        super().__init__()
        self.embed = nn.Linear(in_dim, embed_dim)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.scale, self.margin = scale, margin

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        """L2-normalised embeddings (what verification compares)."""
        return F.normalize(self.embed(torch.flatten(F.adaptive_avg_pool2d(stages[3], 1), 1)), dim=1)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = embeddings.float() @ F.normalize(self.weight.float(), dim=1).t()
        if labels is not None:
            cos = cos - self.margin * F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        return self.scale * cos


class TaskModel(nn.Module):
    """Backbone trunk + task head; `frozen` trunk (linear probe) runs in eval mode, no grad."""

    def __init__(self, trunk: nn.Module, head: nn.Module, frozen: bool = False):
        super().__init__()
        self.trunk, self.head, self.frozen = trunk, head, frozen
        if frozen:
            for p in trunk.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                stages = trunk_stages(self.trunk, x)
        else:
            stages = trunk_stages(self.trunk, x)
        return self.head(stages)
