"""One trainer for every task: build the model from an initialisation, train, predict, evaluate.

- Initialisations: `scratch` (random `cfg.arch`), our SwAV `backbone.pt`, or any torchvision-
  format ResNet checkpoint (architecture inferred).
- Full fine-tuning gives the trunk `lr * backbone_lr` (the paper's backbone relative learning
  rate, Fig. 2); `adapt=linear` freezes the trunk (BN statistics too) and trains the head only.
- AdamW, linear warm-up then cosine decay over a fixed number of steps (the "schedule length"
  the search varies), the loader cycling over epochs as needed — so 2% and 100% of the data
  get the same number of updates unless the search says otherwise.
- CUDA: bf16 autocast, channels_last. Under torchrun the grid (grid.py) gives each rank whole
  runs, so a run is single-device and needs no gradient synchronisation.
- A run checkpoints every `ckpt_every` steps (model, optimiser, schedule, step, RNG) and
  resumes from it when re-run; a stop signal under `facesift finetune` (SIGTERM, SIGUSR1,
  Ctrl-C: `facesift.common.stopping`) checkpoints the current step and ends the grid with `StopRequested`.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from facesift.common.progress import progress as progress_bar
from facesift.common.optim import adamw
from facesift.common.runtime import cpu_has_bf16, resolve_device
from facesift.common.stopping import StopRequested, ignore_in_worker, requested
from facesift.finetune.config import TrainConfig
from facesift.finetune.datasets import RecordDataset
from facesift.finetune.heads import TaskModel
from facesift.pretrain.backbone import build_resnet, load_backbone

log = logging.getLogger(__name__)
_SYNC_EVERY = 20   # steps between reading losses back from the device


@dataclass(frozen=True)
class HParams:
    lr: float
    steps: int
    backbone_lr: float

    def as_dict(self) -> dict:
        return {"lr": self.lr, "steps": self.steps, "backbone_lr": self.backbone_lr}


def pick_device(spec: str = "auto") -> torch.device:
    return torch.device(resolve_device(spec))


def build_trunk(init: str, arch: str) -> nn.Module:
    if init == "scratch":
        if arch == "auto":
            arch = "resnet50" if torch.cuda.is_available() else "resnet18"
        return build_resnet(arch)
    if not Path(init).is_file():
        raise FileNotFoundError(f"initialisation {init!r}: not 'scratch' and no such checkpoint file")
    return load_backbone(init)


def build_model(task, init: str, arch: str, adapt: str = "full", seed: int | None = None) -> TaskModel:
    """The trunk and the task's head; with `seed`, the head's random init is that seed's, whatever
    this process ran before (the previous run of a rank, a search's trials, the runs a resume
    skips): a run's result is a function of its identity alone."""
    if seed is not None:
        seed_everything(seed)
    trunk = build_trunk(init, arch)
    return TaskModel(trunk, task.head(trunk), frozen=(adapt == "linear"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.lru_cache(maxsize=1)
def _warn_no_bf16() -> None:
    """Once per process: the warning would otherwise repeat for every trial and seed."""
    log.warning("train.cpu_amp: this CPU has no native bf16 (avx512_bf16/amx_bf16), where oneDNN's "
                "emulated bf16 is many times slower than fp32: training and evaluation run in fp32")


def _cpu_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether this CPU run computes in bf16: asked for (`train.cpu_amp` with `train.amp`) and
    native; where bf16 would be emulated (slower) it warns once and stays fp32."""
    if not (cfg.cpu_amp and cfg.amp and device.type == "cpu"):
        return False
    if not cpu_has_bf16():
        _warn_no_bf16()
        return False   # a recipe asks for the speed, not for bf16: where it is slower, fp32
    return True


def _autocast(device: torch.device, enabled: bool, cpu: bool = False):
    """bf16 autocast on CUDA; on CPU only when asked (`cpu`: `_cpu_bf16`). The outputs are decoded
    in fp32 either way (the tasks' `predict` casts first)."""
    if enabled and (device.type == "cuda" or (cpu and device.type == "cpu")):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _loader(records, transform, batch_size: int, workers: int, seed: int, train: bool, steps: int = 0) -> DataLoader:
    """Evaluation: the records once, in order. Training: `steps` batches from one stream of
    reshuffled epochs (RandomSampler chains permutations), so that a small fraction does not end an
    epoch every few steps. Each end of an epoch restarted the loader's worker and stalled the step
    on its first batch: at 2 % of the labels (2 batches an epoch) 600 steps took 1.6x as long."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    batch_size = min(batch_size, len(records))
    dataset = RecordDataset(records, transform)
    sampler = RandomSampler(dataset, num_samples=steps * batch_size, generator=gen) if train else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=train, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      worker_init_fn=ignore_in_worker if workers else None)


def make_optimizer(model: TaskModel, hp: HParams, cfg: TrainConfig):
    head = [p for p in model.head.parameters() if p.requires_grad]
    trunk = [p for p in model.trunk.parameters() if p.requires_grad]
    groups = [{"params": head, "lr": hp.lr}]
    if trunk and hp.backbone_lr > 0:
        groups.append({"params": trunk, "lr": hp.lr * hp.backbone_lr})
    elif trunk:   # relative LR 0 = frozen trunk weights (BN stats still adapt)
        for p in trunk:
            p.requires_grad_(False)
    opt = adamw(groups, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * hp.steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, hp.steps - warm))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train(model: TaskModel, task, records: list[dict], hp: HParams, cfg: TrainConfig, seed: int,
          device: torch.device | None = None, ckpt: Path | None = None, teacher: nn.Module | None = None,
          unlabelled: list[dict] | None = None, labelled_weight: float = 1.0,
          progress: bool = False) -> list[float]:
    """Train `model` in place for hp.steps; returns the loss of every step.

    With a `teacher`, each step also takes a batch of `unlabelled` images, labels it online with
    the teacher and adds the task's distillation loss (paper 3.5); the labelled loss is weighted
    by `labelled_weight` (0 = distillation only).
    """
    device = device or pick_device(cfg.device)
    seed_everything(seed)
    model.to(device)
    cpu_amp = _cpu_bf16(cfg, device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, hp, cfg)
    losses: list[float] = []
    start = 0
    if ckpt and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, losses = state["step"], state["losses"]
        log.info("resuming %s at step %d/%d", ckpt.parent.name, start, hp.steps)
    # the data stream restarts from a seed that depends on where we resume, so resuming is reproducible
    left = max(1, hp.steps - start)   # a run checkpointed at its last step still builds its stream
    data = iter(_loader(records, task.transform(True), cfg.batch_size, cfg.workers, seed + start, True, left))
    pool = None
    if teacher is not None:
        teacher.to(device).eval()
        pool = iter(_loader(unlabelled, task.unlabelled_transform(), cfg.batch_size, cfg.workers,
                            seed + start + 1, True, left))
    model.train()
    bar = None
    if progress:
        bar = progress_bar(total=hp.steps, initial=start, desc="train", leave=False, unit="step")
    pending: list[torch.Tensor] = []
    for step in range(start, hp.steps):
        x, y = next(data)
        x = _to_device(x, device, cfg.channels_last)
        with _autocast(device, cfg.amp, cpu=cpu_amp):
            out = model(x)
            loss = task.loss(model, out, y)
            if teacher is not None:
                loss = loss * labelled_weight
                u, _ = next(pool)
                u = _to_device(u, device, cfg.channels_last)
                with torch.no_grad():
                    target = teacher(u)
                loss = loss + task.distill_loss(model(u), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        pending.append(loss.detach())
        last = step + 1 == hp.steps
        stop = None if last else requested()  # SIGTERM / Ctrl-C: checkpoint this step, then stop
        save = ckpt and cfg.ckpt_every and ((step + 1) % cfg.ckpt_every == 0 or last or stop)
        if save or last or stop or len(pending) >= _SYNC_EVERY:   # host sync only now and then (GPU)
            values = torch.stack(pending).float().cpu().tolist()
            pending.clear()
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            if bad is not None:
                raise FloatingPointError(f"loss is {values[bad]} at step {step + 1 - len(values) + bad}: "
                                         "lower the learning rate")
            losses.extend(values)
        if bar:
            bar.update(1)
            if losses:
                bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        if save:
            from facesift.common.atomic import atomic_write
            with atomic_write(ckpt, "wb") as fh:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step + 1, "losses": losses}, fh)
        if stop:
            if bar:
                bar.close()
            raise StopRequested(stop)
    if bar:
        bar.close()
    return losses


@torch.no_grad()
def predict(model: nn.Module, task, records: list[dict], cfg: TrainConfig,
            device: torch.device | None = None, transform=None) -> tuple[np.ndarray, np.ndarray]:
    """Task predictions and (transformed) targets for `records`, in order, without augmentation
    (`transform`: another evaluation transform, e.g. a re-crop's, whose second item comes back).
    With the config's `test_flip` (landmarks) each batch is also predicted mirrored and merged."""
    device = device or pick_device(cfg.device)
    model.to(device).eval()
    preds, targets = [], []
    mirror = getattr(task.cfg, "test_flip", False) and hasattr(task, "merge_flipped")
    cpu_amp = _cpu_bf16(cfg, device)
    for x, y in _loader(records, transform or task.transform(False), cfg.eval_batch_size, cfg.workers, 0, False):
        with _autocast(device, cfg.amp, cpu=cpu_amp):
            x = _to_device(x, device, cfg.channels_last)
            out = model(x)
            if mirror:
                out = task.merge_flipped(out, model(x.flip(-1)))
        preds.append(task.predict(out))
        targets.append(y.numpy())
    return np.concatenate(preds), np.concatenate(targets)


def recropped(model: nn.Module, task, records: list[dict], preds: np.ndarray, reference: list[dict],
              cfg: TrainConfig, device: torch.device | None = None) -> np.ndarray:
    """Landmarks: `task.cfg.recrop.passes` re-crops around `preds` (recrop.py), each predicted
    again and mapped back. The canonical shape comes from `reference`, the labels the model
    was trained on (never the test labels)."""
    from facesift.finetune import recrop
    from facesift.finetune.baseline import mean_points
    rc = task.cfg.recrop
    canonical = recrop.canonical_shape(mean_points(task, reference)[None], task.cfg.image_size, rc.zoom)
    transform = recrop.RecropTransform(task.cfg.image_size)
    for _ in range(rc.passes):
        recs = [dict(r, recrop=recrop.recrop_matrix(canonical, p)) for r, p in zip(records, preds)]
        inner, backs = predict(model, task, recs, cfg, device, transform=transform)
        preds = np.stack([recrop.map_back(q, b.reshape(3, 3)) for q, b in zip(inner, backs)])
    return preds


def evaluate(model: nn.Module, task, records: list[dict], cfg: TrainConfig, pairs=None,
             device: torch.device | None = None, reference: list[dict] | None = None) -> dict:
    """The task's metrics on `records` (recognition: on the images of `pairs`, or pairs made from records).

    Landmarks with `recrop.passes`: `reference` (the training records) is required, so the
    search's validation and the test are scored the same way."""
    if task.name == "recognition":
        if pairs is None:
            from facesift.finetune.datasets import make_pairs
            pairs = make_pairs(records)
        paths = sorted({p for a, b, _ in pairs for p in (a, b)})
        records = [{"key": p, "path": p, "target": None} for p in paths]
    preds, targets = predict(model, task, records, cfg, device)
    if task.name == "landmarks" and task.cfg.recrop.passes:
        if not reference:
            raise ValueError("recrop.passes needs the training records (reference=) for the canonical shape")
        preds = recropped(model, task, records, preds, reference, cfg, device)
    return task.metrics(preds, targets, records, pairs)
