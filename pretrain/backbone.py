"""Backbones: torchvision ResNets without their classifier, and loading `backbone.pt`.

`backbone.pt` is a plain torchvision ResNet state_dict (no fc), so anyone can use it with two
lines of torchvision; the loaders here also accept checkpoints saved with common wrappers
(`module.` from DDP, `backbone.`/`model.`/`encoder.` prefixes) and infer the architecture from
the block layout when it is not given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import nn
import torchvision

_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "trunk.")
# blocks per stage -> torchvision name, for inferring the architecture of a state_dict
_LAYOUTS = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}


def build_resnet(arch: str = "resnet50", **kwargs) -> nn.Module:
    """A randomly initialised torchvision ResNet whose `fc` is Identity (outputs pooled features)."""
    if not arch.startswith(("resnet", "wide_resnet", "resnext")):
        raise ValueError(f"unsupported backbone {arch!r}: use a torchvision ResNet (resnet18, resnet50, ...)")
    model = torchvision.models.get_model(arch, weights=None, **kwargs)
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes and drop the classifier, leaving torchvision ResNet keys."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        if key.startswith("fc."):
            continue
        out[key] = value
    return out


def infer_arch(state: Mapping[str, torch.Tensor]) -> str:
    kind = "bottleneck" if any(".conv3." in k for k in state) else "basic"
    counts = []
    for stage in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.")}
        counts.append(max(blocks) + 1 if blocks else 0)
    try:
        return _LAYOUTS[(kind, tuple(counts))]
    except KeyError:
        raise ValueError(f"cannot infer a torchvision ResNet from blocks {counts} ({kind}); pass arch=") from None


def load_backbone(path: str | Path, arch: str | None = None, map_location: str = "cpu") -> nn.Module:
    """A ResNet trunk (fc = Identity) with weights from `path` (our backbone.pt or torchvision format)."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    state = clean_state_dict(state)
    arch = arch or infer_arch(state)
    model = build_resnet(arch)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: weights do not match {arch}: {str(err).splitlines()[1:3]}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {arch} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model
