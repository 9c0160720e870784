"""`PretrainConfig`: every option of `facesift pretrain`, with the reference SwAV defaults.

Defaults are facebookresearch/swav's ResNet-50 recipe (2×224 + 6×96 crops, 3000 prototypes,
ε 0.05, 3 Sinkhorn iterations, temperature 0.1, LARS); `configs/*.yaml` hold the presets
(`cpu-tiny`, `gpu-r50`, `gpu-r50-bs256`), and `--set a.b=v` overrides any field.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from facesift.common.config import add_config_args
from facesift.common.images import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class ModelConfig:
    arch: str = "resnet50"            # any torchvision ResNet: resnet18, resnet50, wide_resnet50_2 ...
    hidden_mlp: int = 2048            # projection head hidden width (0: a single Linear)
    feat_dim: int = 128               # embedding size on the unit sphere
    nmb_prototypes: int = 3000        # K
    sync_bn: bool = True              # SyncBatchNorm under DDP


@dataclass
class CropConfig:
    nmb_crops: list[int] = field(default_factory=lambda: [2, 6])
    size_crops: list[int] = field(default_factory=lambda: [224, 96])
    min_scale_crops: list[float] = field(default_factory=lambda: [0.14, 0.05])
    max_scale_crops: list[float] = field(default_factory=lambda: [1.0, 0.14])
    jitter_strength: float = 1.0      # ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # pixels, like PIL's radius
    flip_p: float = 0.5
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class SwAVConfig:
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_niters: int = 313
    queue_length: int = 0             # 0: no queue (large batches); bs256 recipe: 3840
    epoch_queue_starts: int = 15


@dataclass
class OptimConfig:
    epochs: int = 400
    base_lr: float = 4.8              # at reference_batch images per step (all ranks)
    reference_batch: int = 4096       # lr = base_lr × global_batch / reference_batch
    final_lr: float = 0.0048          # also scaled with the batch
    start_warmup: float = 0.3
    warmup_epochs: float = 10
    weight_decay: float = 1e-6
    momentum: float = 0.9
    trust_coefficient: float = 0.001
    lars: bool = True
    exclude_bn_bias: bool = False     # True: no weight decay and no LARS adaptation on BN/bias


@dataclass
class DataConfig:
    batch_size: int = 64              # per rank (global batch = batch_size × world size)
    workers: int = 8                  # DataLoader workers per rank
    epoch_size: int = 0               # samples per epoch (all ranks); 0: the shard index's total
    resampled: bool = True            # sample shards with replacement (any shard sizes, DDP-safe)
    shuffle_buffer: int = 2000        # samples, after shard/rank/worker splitting
    keys: str = ""                    # optional key list (one key per line, e.g. from `shards split`)
    augment_on_device: bool = False   # workers only decode; crops, colour, blur, normalise on the training device
    prefetch_factor: int = 4


@dataclass
class PretrainConfig:
    shards: str = ""                  # a shard dir, index.json, brace pattern, file:/pipe:/http URLs
    out: str = "ckpt"
    seed: int = 31
    device: str = "auto"              # auto | cpu | cuda
    amp: bool = True                  # bf16 autocast on CUDA and on CPUs with native bf16 (train.bf16_native)
    channels_last: bool = True
    compile: bool = False             # torch.compile the trunk (CUDA)
    checkpoint_every: int = 500       # steps; and always at the end of an epoch and of the run
    log_every: int = 10               # steps between CSV/TensorBoard rows
    max_steps: int = 0                # stop early after this many steps in total (0: all epochs)
    collapse_warmup_steps: int = 200  # collapse watch starts after this many steps
    collapse_patience: int = 100      # steps at ln K (or concentrated) before it warns
    model: ModelConfig = field(default_factory=ModelConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    swav: SwAVConfig = field(default_factory=SwAVConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)


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
