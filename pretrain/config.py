"""`PretrainConfig`: every option of `facesift pretrain`, with the reference SwAV defaults.

Defaults are facebookresearch/swav's ResNet-50 recipe (2×224 + 6×96 crops, 3000 prototypes,
ε 0.05, 3 Sinkhorn iterations, temperature 0.1, LARS); `configs/*.yaml` hold the presets
(`cpu-tiny`, `gpu-r50`, `gpu-r50-bs256`), and `--set a.b=v` overrides any field.

Every numeric field is `bounded` (checked when the config is resolved) and `PretrainConfig.check`
adds what one field cannot say (strictly positive values, lists that must agree, a known
architecture): a value that cannot train stops the command with exit 2 and a line naming the
field before anything is written — not `loss=nan` after zero epochs, nor a ZeroDivisionError.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from facesift.common.config import add_config_args, bounded, bounded_list, check_range
from facesift.common.images import IMAGENET_MEAN, IMAGENET_STD

ARCH_PREFIXES = ("resnet", "wide_resnet", "resnext")


def positive(default: float) -> Any:
    """A float that must be > 0 (a temperature, ε, a blur σ): `bounded` at 0, and `check` refuses 0."""
    return dataclasses.field(default=default, metadata={"range": (0, None), "positive": True})


@dataclass
class ModelConfig:
    arch: str = "resnet50"            # any torchvision ResNet: resnet18, resnet50, wide_resnet50_2 ...
    hidden_mlp: int = bounded(2048, 0)      # projection head hidden width (0: a single Linear)
    feat_dim: int = bounded(128, 1)         # embedding size on the unit sphere
    nmb_prototypes: int = bounded(3000, 2)  # K (one prototype would be a constant code)
    sync_bn: bool = True              # SyncBatchNorm under DDP


@dataclass
class CropConfig:
    nmb_crops: list[int] = bounded_list([2, 6], 1)            # crops per resolution (globals first)
    size_crops: list[int] = bounded_list([224, 96], 1)        # pixels
    min_scale_crops: list[float] = bounded_list([0.14, 0.05], 0, 1)  # fractions of the image area
    max_scale_crops: list[float] = bounded_list([1.0, 0.14], 0, 1)
    jitter_strength: float = bounded(1.0, 0)  # ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    jitter_p: float = bounded(0.8, 0, 1)
    grayscale_p: float = bounded(0.2, 0, 1)
    blur_p: float = bounded(0.5, 0, 1)
    blur_sigma: list[float] = bounded_list([0.1, 2.0], 0)   # [low, high] pixels, like PIL's radius; > 0
    flip_p: float = bounded(0.5, 0, 1)
    mean: list[float] = bounded_list(list(IMAGENET_MEAN), 0, 1)  # per channel, of 0–1 pixels
    std: list[float] = bounded_list(list(IMAGENET_STD), 0, None)  # per channel; > 0


@dataclass
class SwAVConfig:
    crops_for_assign: list[int] = bounded_list([0, 1], 0)  # crop indices whose codes are predicted
    temperature: float = positive(0.1)
    epsilon: float = positive(0.05)
    sinkhorn_iterations: int = bounded(3, 1)
    freeze_prototypes_niters: int = bounded(313, 0)
    queue_length: int = bounded(0, 0)   # 0: no queue (large batches); bs256 recipe: 3840
    epoch_queue_starts: int = bounded(15, 0)


@dataclass
class OptimConfig:
    epochs: int = bounded(400, 1)
    base_lr: float = bounded(4.8, 0)          # at reference_batch images per step (all ranks)
    reference_batch: int = bounded(4096, 1)   # lr = base_lr × global_batch / reference_batch
    final_lr: float = bounded(0.0048, 0)      # also scaled with the batch
    start_warmup: float = bounded(0.3, 0)
    warmup_epochs: float = bounded(10, 0)
    weight_decay: float = bounded(1e-6, 0)
    momentum: float = bounded(0.9, 0, 1)
    trust_coefficient: float = positive(0.001)
    lars: bool = True
    adamw: bool = False               # AdamW (betas 0.9/0.999) instead of SGD/LARS: the small-batch CPU recipe
    exclude_bn_bias: bool = False     # True: no weight decay and no LARS adaptation on BN/bias


@dataclass
class DataConfig:
    batch_size: int = bounded(64, 1)  # per rank (global batch = batch_size × world size)
    workers: int = bounded(8, 0)      # DataLoader workers per rank (0: the main process loads)
    epoch_size: int = bounded(0, 0)   # samples per epoch (all ranks); 0: the shard index's total
    resampled: bool = True            # sample shards with replacement (any shard sizes, DDP-safe)
    shuffle_buffer: int = bounded(2000, 0)  # samples, after shard/rank/worker splitting (0, 1: none)
    keys: str = ""                    # optional key list (one key per line, e.g. from `shards split`)
    augment_on_device: bool = False   # workers only decode; crops, colour, blur, normalise on the training device
    prefetch_factor: int = bounded(4, 1)
    pose_balance: bool = False        # flatten the yaw histogram (pretrain/posebalance.py; needs curate's yaw)
    pose_bins: int = bounded(6, 2, 36)          # equal-width yaw bins over [-90, 90] degrees
    pose_cap: float = bounded(4.0, 1.0)         # no bin kept at more than this × its natural rate


@dataclass
class PretrainConfig:
    shards: str = ""                  # a shard dir, index.json, brace pattern, file:/pipe:/http URLs
    out: str = "ckpt"
    seed: int = bounded(31, 0, 2**32 - 1)  # numpy's seed range
    device: str = "auto"              # auto | cpu | cuda
    amp: bool = True                  # bf16 autocast on CUDA and on CPUs with native bf16 (train.bf16_native)
    channels_last: bool = True
    compile: bool = False             # torch.compile the trunk (CUDA)
    checkpoint_every: int = bounded(500, 1)     # steps; and always at the end of an epoch and of the run
    log_every: int = bounded(10, 1)             # steps between CSV/TensorBoard rows
    max_steps: int = bounded(0, 0)              # stop early after this many steps in total (0: all epochs)
    collapse_warmup_steps: int = bounded(200, 0)  # collapse watch starts after this many steps
    collapse_patience: int = bounded(100, 1)    # steps at ln K (or concentrated) before it warns
    model: ModelConfig = field(default_factory=ModelConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    swav: SwAVConfig = field(default_factory=SwAVConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def check(self) -> "PretrainConfig":
        """Refuse a config that cannot train, naming the field (ValueError: the CLI's exit 2).

        Repeats the `bounded` checks (a config built in code never went through `resolve`) and
        adds the ones a single field cannot express. Cheap, and called before any work."""
        _check_bounds(self, "")
        arch = self.model.arch
        if not arch.startswith(ARCH_PREFIXES) or arch not in _torchvision_models():
            raise ValueError(f"model.arch: {arch!r} is not a torchvision ResNet "
                             "(resnet18, resnet34, resnet50, resnet101, wide_resnet50_2, resnext50_32x4d ...)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        c = self.crops
        lengths = {len(c.nmb_crops), len(c.size_crops), len(c.min_scale_crops), len(c.max_scale_crops)}
        if len(lengths) != 1:
            raise ValueError("crops: nmb_crops, size_crops, min_scale_crops and max_scale_crops need "
                             f"equal lengths (one entry per resolution), got {c.nmb_crops}, {c.size_crops}, "
                             f"{c.min_scale_crops}, {c.max_scale_crops}")
        for i, (lo, hi) in enumerate(zip(c.min_scale_crops, c.max_scale_crops)):
            if not 0 < hi or lo > hi:
                raise ValueError(f"crops: resolution {i} has min_scale_crops {lo} and max_scale_crops {hi} "
                                 "(need 0 <= min <= max, max > 0)")
        total = sum(c.nmb_crops)
        if total < 2:
            raise ValueError(f"crops.nmb_crops: {c.nmb_crops} is {total} crop; SwAV predicts each crop's code "
                             "from the others, so it needs at least 2")
        if len(c.blur_sigma) != 2 or c.blur_sigma[0] > c.blur_sigma[1]:
            raise ValueError(f"crops.blur_sigma: {c.blur_sigma} must be [low, high] with low <= high")
        for name, values, n in (("mean", c.mean, 3), ("std", c.std, 3)):
            if len(values) != n:
                raise ValueError(f"crops.{name}: {values} needs {n} values (R, G, B)")
        _check_positive("crops.blur_sigma", c.blur_sigma)
        _check_positive("crops.std", c.std)
        bad = [i for i in self.swav.crops_for_assign if i >= total]
        if bad or len(set(self.swav.crops_for_assign)) != len(self.swav.crops_for_assign):
            raise ValueError(f"swav.crops_for_assign: {self.swav.crops_for_assign} must be distinct crop "
                             f"indices below {total} (the number of crops)")
        return self


def _check_positive(where: str, value: Any) -> None:
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{where}: {v!r} is out of range (must be greater than 0)")


def _check_bounds(cfg: Any, where: str) -> None:
    """The `bounded`/`positive` checks of every field of a config tree."""
    for f in dataclasses.fields(cfg):
        name = f"{where}{f.name}"
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_bounds(value, f"{name}.")
            continue
        if f.metadata.get("nonempty") and not value:
            raise ValueError(f"{name}: needs at least one value")
        if "range" in f.metadata:
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"{name}: expected a number, got {v!r}")
            check_range(value, *f.metadata["range"], name)
        if f.metadata.get("positive"):
            _check_positive(name, value)


def _torchvision_models() -> set[str]:
    import torchvision
    return set(torchvision.models.list_models(module=torchvision.models))


def add_args(parser: argparse.ArgumentParser) -> None:
    """The command line shared by `facesift pretrain` and `python -m facesift.pretrain.train`."""
    parser.add_argument("--shards", help="shard dir, index.json, brace pattern, file:/pipe:/http URLs")
    parser.add_argument("--out", help="output dir for last.pt, backbone.pt, logs (default: ckpt)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue from OUT/last.pt (exactly where it stopped)")
    start.add_argument("--restart", action="store_true",
                       help="start over although OUT/last.pt exists (it is replaced at the first checkpoint)")
    add_config_args(parser)
