"""Backbones: torchvision ResNets without their classifier, and loading `backbone.pt`.

`backbone.pt` is a plain torchvision ResNet state_dict (no fc), so anyone can use it with two
lines of torchvision; the loaders here also accept checkpoints saved with common wrappers
(`module.` from DDP, `backbone.`/`model.`/`encoder.` prefixes) and infer the architecture from
the block layout when it is not given.

A backbone path is often a file from the web, so it is only ever read with torch's
`weights_only` unpickler, and a file that is not a backbone — random bytes, an empty or cut-off
download, a pickle calling something it should not, some other model's weights — is refused
with `NotACheckpoint`: "not a facesift/torchvision checkpoint: PATH (reason)". Never torch's
own message, which advises `weights_only=False`: the one thing not to do with such a file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

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


_ZIP_MAGIC = b"PK\x03\x04"


class NotACheckpoint(ValueError):
    """A file that is not a checkpoint of the kind asked for; `reason` says why in a few words.

    A ValueError, so every command's "the user's to fix" handler exits 2 with this one line."""

    def __init__(self, path: str | Path, reason: str, what: str = "facesift/torchvision checkpoint"):
        super().__init__(f"not a {what}: {path} ({reason})")
        self.path, self.reason = Path(path), reason


def load_problem(path: Path, exc: BaseException) -> str:
    """A few words on why torch.load failed on `path`, never torch's advice to load it unsafely."""
    text = str(exc)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if blocked:
        return f"it needs {blocked.group(1)}, which the safe loader does not run: nothing was loaded"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if not head:
        return "empty file (0 bytes)"
    if head == _ZIP_MAGIC:  # torch's zip format whose central directory (at the end) is missing
        return "truncated: an incomplete zip archive" if "central directory" in text else \
            f"a damaged zip archive ({_first_line(text)})"
    if isinstance(exc, EOFError) or "unexpected EOF" in text or "Ran out of input" in text:
        return "truncated"
    if head[:1] == b"\x80":  # a pickle's PROTO opcode
        return "a pickle, but not one torch.save wrote"
    return "not a zip/pickle file"


def _first_line(text: str) -> str:
    line = next((l.strip() for l in text.splitlines() if l.strip()), "")
    return line[:160] if "weights_only" not in line else "unreadable"


def safe_load(path: str | Path, what: str = "facesift/torchvision checkpoint", allow: Iterable[Any] = ()) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with any failure a `NotACheckpoint`.

    `allow` extends the unpickler's allow-list (our own last.pt holds numpy RNG states); nothing
    else from the file is ever run. A missing file stays FileNotFoundError (callers say "not found")."""
    path = Path(path)
    if path.is_dir():
        raise NotACheckpoint(path, "a directory", what)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every way a file can fail to load is one reason
        raise NotACheckpoint(path, load_problem(path, exc), what) from None


def _key_summary(keys: list, n: int = 5) -> str:
    shown = ", ".join(str(k) for k in keys[:n])
    return shown + (f", ... {len(keys) - n} more" if len(keys) > n else "")


def backbone_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The ResNet trunk weights in `path` (prefixes stripped, no fc), or `NotACheckpoint` saying
    what the file holds instead."""
    state = safe_load(path)
    if not isinstance(state, Mapping):
        raise NotACheckpoint(path, f"holds a {type(state).__name__}, not a state_dict")
    for inner in ("state_dict", "model"):
        if isinstance(state.get(inner), Mapping):
            state = state[inner]
    if not all(isinstance(k, str) for k in state):
        raise NotACheckpoint(path, f"holds a {type(state).__name__} with non-text keys, not a state_dict")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise NotACheckpoint(path, f"holds a {type(state).__name__} without tensors "
                                   f"(keys: {_key_summary(list(state))}), not a state_dict")
    cleaned = clean_state_dict(tensors)
    if "conv1.weight" not in cleaned or not any(k.startswith("layer1.") for k in cleaned):
        raise NotACheckpoint(path, f"no ResNet weights (keys: {_key_summary(list(tensors))})")
    return cleaned


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
    """A ResNet trunk (fc = Identity) with weights from `path` (our backbone.pt or torchvision format),
    on the CPU (`map_location` is kept for old callers: move the model where it is needed).

    Raises `NotACheckpoint` for a file that is not one (see the module docstring), ValueError for
    ResNet weights that do not fit `arch`, FileNotFoundError for a missing file."""
    state = backbone_state(path)
    try:
        arch = arch or infer_arch(state)
    except ValueError as err:
        raise NotACheckpoint(path, str(err).split(";")[0]) from None
    model = build_resnet(arch)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: weights do not match {arch}: {str(err).splitlines()[1:3]}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match {arch} "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model
