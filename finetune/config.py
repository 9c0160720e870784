"""`facesift finetune` options: one dataclass tree with working defaults (CPU-sized where it
matters; raise `image_size`, `arch` and the search space's steps for GPU runs)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from facesift.common.config import bounded, bounded_list
from facesift.finetune.augment import AugmentConfig
from facesift.finetune.recrop import RecropConfig

TASKS = ("landmarks", "classification", "regression", "recognition")


@dataclass
class SearchSpace:
    """Paper 3.3 / Fig. 2: learning rate, schedule length and the backbone's relative LR.
    The first value of each list is the default (the only trial when --trials 1)."""
    lr: list[float] = bounded_list([1e-3, 3e-4, 3e-3], 0.0)
    steps: list[int] = bounded_list([600, 300, 1200], 1)
    backbone_lr: list[float] = bounded_list([1.0, 0.1, 0.01], 0.0)
    # > 0: each `steps` value is the schedule for this many labelled images, and a data point
    # with n images trains steps * sqrt(n / steps_images) steps (at least min_steps): 2 % of
    # the labels gets ~1/7 of the updates, still ~7x as many epochs. 0: `steps` as given.
    steps_images: int = bounded(0, 0)
    min_steps: int = bounded(50, 1)


@dataclass
class TrainConfig:
    batch_size: int = bounded(32, 1)
    eval_batch_size: int = bounded(128, 1)
    weight_decay: float = bounded(1e-4, 0.0)
    warmup: float = bounded(0.05, 0.0, 1.0)  # fraction of the schedule spent warming up linearly
    workers: int = bounded(2, 0)    # DataLoader processes (0 = in the main process)
    device: str = "auto"            # auto = cuda:<LOCAL_RANK> when available, else cpu
    amp: bool = True                # bf16 autocast on CUDA
    cpu_amp: bool = False           # bf16 autocast of training and evaluation on CPUs with native bf16 (with `amp`)
                                    # faster where the CPU has avx512_bf16 (measured, resnet18 48 px); slower without
    channels_last: bool = True      # on CUDA
    ckpt_every: int = bounded(500, 0)  # steps between resumable checkpoints of a run (0 = never)
    threads: int = bounded(0, 0)    # torch intra-op threads on CPU (0 = torch's default)


@dataclass
class FinetuneConfig:
    task: str = "landmarks"
    data: str = ""                  # landmarks: list file / landmarks5 dir / .pts dir; others: manifest or yalefaces dir
    test: str = ""                  # a separate labelled test set; empty = carve test_fraction from data by hash
    pairs: str = ""                 # recognition: verification pairs file for the test
    inits: list[str] = field(default_factory=lambda: ["scratch"])
    arch: str = "auto"              # for `scratch`: auto = resnet50 on CUDA, resnet18 on CPU (checkpoints carry their own)
    fractions: list[float] = bounded_list([1.0, 0.1, 0.02], 1e-9, 1.0)
    # "0.1=keys.txt": a fraction from a `shards split` key list; "{seed}" in the path: one list per seed
    fraction_keys: list[str] = field(default_factory=list)
    seeds: int = bounded(3, 1)
    out: str = "work/finetune"
    adapt: str = "full"             # full fine-tune or linear probe (frozen backbone)
    trials: int = bounded(1, 1)     # hyper-parameter search budget per (task, dataset, init, fraction)
    image_size: int = bounded(128, 8)
    test_fraction: float = bounded(0.2, 0.0, 0.9)
    val_fraction: float = bounded(0.2, 0.0, 0.9)  # of each training fraction, for the search only
    min_val: int = bounded(8, 1)
    split_seed: int = 0
    label: str = "identity"         # yalefaces folder given as data: identity or expression
    sigma: float = bounded(1.5, 0.1)  # heatmap Gaussian std, in heatmap pixels (stride 4)
    nme_norm: str = "auto"          # landmark NME headline: auto | inter-ocular | box-diagonal
    regression_loss: str = "l2"     # l2, ccc, l2+ccc
    embed_dim: int = bounded(512, 1)
    cosface_scale: float = bounded(30.0, 0.0)
    cosface_margin: float = bounded(0.35, 0.0, 1.0)
    distill: int = bounded(0, 0)    # self-distillation rounds T (0 = off)
    unlabelled: str = ""            # image folder or list; "pool" = the training pool without its labels
    distill_labelled_weight: float = bounded(1.0, 0.0)  # weight of the labelled loss while distilling
    search: SearchSpace = field(default_factory=SearchSpace)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    recrop: RecropConfig = field(default_factory=RecropConfig)   # landmarks: test-time re-crops (recrop.py)
    test_flip: bool = False         # landmarks: average each prediction with the mirrored image's (every pass)

    def check(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if not self.data:
            raise ValueError("no data: pass --data")
        if self.adapt not in ("full", "linear"):
            raise ValueError(f"adapt must be 'full' or 'linear', got {self.adapt!r}")
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must lie in (0, 1], got {bad}")
        if self.seeds < 1 or self.trials < 1:
            raise ValueError("--seeds and --trials must be >= 1")
        if self.distill and not self.unlabelled:
            raise ValueError("--distill needs --unlabelled (an image folder, a list, or 'pool')")
        if not self.inits:
            raise ValueError("no initialisations: pass --inits scratch,path/to/backbone.pt")
        lo, hi = self.augment.scale
        if not 0 < lo <= hi:
            raise ValueError(f"augment.scale must be [low, high] with 0 < low <= high, got {list(self.augment.scale)}")
        if self.task == "landmarks" and self.recrop.passes and not lo <= self.recrop.zoom <= hi:
            raise ValueError(f"recrop.zoom {self.recrop.zoom} is outside augment.scale {list(self.augment.scale)}: "
                             "the re-crop would show the model faces at a size it never trained on")
        from facesift.finetune.metrics import NME_NORMS
        if self.nme_norm not in NME_NORMS:
            raise ValueError(f"nme_norm must be one of {', '.join(NME_NORMS)}, got {self.nme_norm!r}")


def stable_hash(obj, length: int = 16) -> str:
    """Hex digest of a JSON-able object (sorted keys): the cache key of a run or a trial."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a checkpoint, so results are re-computed when the backbone file changes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()[:16]
