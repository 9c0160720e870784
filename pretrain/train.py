"""The SwAV training loop: streaming batches in, checkpoints and logs out; one CPU to many GPUs.

Run as `facesift pretrain ...` (one process, or `--nproc G` which re-launches this module under
`torch.distributed.run`), or directly:

    torchrun --nproc_per_node=G -m facesift.pretrain.train --shards DIR --out DIR --config configs/gpu-r50.yaml

Here: the set-up (seeds, schedule, model, optimiser) and the loop. Everything a resumed run
needs is in `last.pt` (checkpoint.py: model, optimiser, AMP scaler, step — the LR schedule is a
pure function of it —, each rank's queue, stream position and RNG states, and the config),
written atomically every `checkpoint_every` steps and at every epoch's end; metrics.csv,
TensorBoard and the progress bar are trainlog.py's.

Before any work: the config is checked (config.py), one run per output directory is enforced
(rank 0 holds `OUT/.facesift.lock`; a second run on the same --out exits 2 naming the holder),
and the shards, the key list and a resumed checkpoint are read and checked; only then is
anything written in --out. Bad input is one line and exit 2, never a traceback; a damaged shard
met while streaming is named, counted (`damaged_shards`) and makes the run exit 1 at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from facesift.pretrain import distributed as D
from facesift.pretrain.checkpoint import (RunState, fresh_stream, note_damage, refuse_overwrite,
                                          resume_checkpoint, save_checkpoint)
from facesift.pretrain.config import PretrainConfig, add_args
from facesift.pretrain.data import count_samples, make_loader, read_keys
from facesift.pretrain.multicrop import augment_batch, crop_plan, cut_crops
from facesift.pretrain.optim import LARS, lr_at, param_groups, scaled_lr
from facesift.pretrain.posebalance import PoseTable, pose_table, yaw_counts
from facesift.pretrain.posebalance import describe as describe_pose
from facesift.pretrain.swav import (CollapseWatch, SwAVModel, SwAVStats, drop_prototype_grads, make_queue,
                                    normalize_prototypes, swav_loss)
from facesift.pretrain.trainlog import TrainLog
from facesift.shards.damaged import DAMAGED_EXIT
from facesift.shards.index import shard_urls
from facesift.common.atomic import atomic_write_json, remove_stale_temps
from facesift.common.config import resolve, save_config
from facesift.common.lock import LOCK_NAME, LockHeld, output_lock
from facesift.common.optim import adamw
from facesift.common.runtime import cpu_has_bf16, env_rank
from facesift.common.stopping import GracefulStop, stop_code

log = logging.getLogger("facesift.pretrain")
# set by `facesift pretrain --nproc G` for its torchrun workers: the launcher holds OUT's lock
# (value: the resolved --out) and wants rank 0's summary in this file instead of exit status 1
LAUNCHER_LOCK_ENV = "FACESIFT_PRETRAIN_LOCKED_OUT"
RESULT_ENV = "FACESIFT_PRETRAIN_RESULT"
# what the commands treat as the user's to fix: one line, exit 2
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, LockHeld)


class OtherRankFailed(ValueError):
    """This rank stops because rank 0 could not start (its own message says why)."""


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: CUDA, or a CPU with AVX512-BF16 / AMX (where
    oneDNN's bf16 convolutions are ~1.7× faster than fp32: 50 vs 29 img/s for the benchmark's
    resnet18 step). Elsewhere bf16 would be emulated, slower than fp32: keep fp32."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16()


@dataclass(frozen=True)
class Schedule:
    """The run's length and learning rates, fixed by the config, the data and the world size."""
    global_batch: int
    steps_per_epoch: int
    total_steps: int       # all epochs: the cosine schedule's length
    stop_step: int         # where this run ends (max_steps may end it early)
    warmup_steps: int
    base_lr: float
    final_lr: float
    start_lr: float

    def lr(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.base_lr, self.final_lr, self.start_lr)


def make_schedule(cfg: PretrainConfig, n_samples: int, world_size: int) -> Schedule:
    """Epochs in whole global batches; learning rates scaled linearly with the global batch."""
    global_batch = cfg.data.batch_size * world_size
    steps_per_epoch = n_samples // global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"{n_samples} samples per epoch is less than one global batch ({global_batch}): "
                         "lower data.batch_size or set data.epoch_size")
    total_steps = cfg.optim.epochs * steps_per_epoch
    o = cfg.optim
    return Schedule(global_batch, steps_per_epoch, total_steps,
                    min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps,
                    int(round(o.warmup_epochs * steps_per_epoch)),
                    *(scaled_lr(lr, global_batch, o.reference_batch) for lr in (o.base_lr, o.final_lr, o.start_warmup)))


def _prepare_out(cfg: PretrainConfig, di: D.DistInfo) -> None:
    """The output folder once the run is known to start (rank 0: stale temporaries gone, config saved)."""
    if di.main:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        save_config(cfg, out / "pretrain.yaml")


def _seed(cfg: PretrainConfig, di: D.DistInfo) -> None:
    """Seeds (before the model is built: its initial weights come from them) and CUDA flags."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if di.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _build(cfg: PretrainConfig, di: D.DistInfo, lr: float
           ) -> tuple[SwAVModel, torch.optim.Optimizer, torch.amp.GradScaler]:
    """Model on its device (SyncBatchNorm under DDP on CUDA), LARS, SGD or AdamW, and the AMP scaler."""
    model = SwAVModel(cfg.model.arch, cfg.model.hidden_mlp, cfg.model.feat_dim, cfg.model.nmb_prototypes)
    if di.world_size > 1 and cfg.model.sync_bn:
        if di.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif di.main:
            log.info("SyncBatchNorm needs CUDA: on CPU each rank normalises with its own batch statistics")
    model = model.to(di.device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.exclude_bn_bias)
    if cfg.optim.adamw:   # weight decay per group (0 on BN/bias when excluded), decoupled as in AdamW
        optimizer = adamw(groups, lr=lr, betas=(0.9, 0.999))
    elif cfg.optim.lars:
        optimizer = LARS(groups, lr=lr, momentum=cfg.optim.momentum,
                         weight_decay=cfg.optim.weight_decay, trust_coefficient=cfg.optim.trust_coefficient)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling; kept for the format
    return model, optimizer, scaler


def train(cfg: PretrainConfig, resume: bool = False, restart: bool = False) -> dict:
    """Pretrain; returns the run's summary counts (also printed by the CLI).

    The config is checked first (ValueError naming the field). One run per output directory:
    a second one raises `LockHeld` at once. An existing OUT/last.pt is never overwritten by
    accident: without `resume` (continue it) or `restart` (start over) that is an error, before
    any data is touched."""
    cfg.check()
    dist_info = D.init_distributed(cfg.device)
    try:
        with run_lock(cfg.out, dist_info), GracefulStop() as stopper:
            refuse_overwrite(cfg.out, resume, restart)
            return _train(cfg, resume, dist_info, stopper)
    finally:
        D.cleanup()


def check_out(out: str | Path) -> Path:
    """--out must be a directory or not exist yet: a file there is the user's to fix."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory: choose another output directory")
    return out


@contextlib.contextmanager
def run_lock(out: str | Path, di: D.DistInfo) -> Iterator[None]:
    """Hold OUT's lock for the run: rank 0 takes `.facesift.lock` (the ranks of one job share
    --out; any other run on it, one process or a whole torchrun job, finds rank 0's lock). Every
    rank learns whether it got it (one all-reduce), so a refused job stops on all ranks at once
    instead of hanging in its first collective. Under `facesift pretrain --nproc` the launcher
    already holds it. The kernel drops the lock however the process ends (stop signals too)."""
    out = check_out(out)
    if di.world_size > 1 and os.environ.get(LAUNCHER_LOCK_ENV) == str(out.resolve()):
        yield
        return
    with contextlib.ExitStack() as stack:
        refused: Exception | None = None
        if di.main:
            try:
                stack.enter_context(output_lock(out, LOCK_NAME))
            except USER_ERRORS as exc:
                refused = exc
        if D.max_over_ranks(int(refused is not None), di.device):
            if refused is not None:
                raise refused
            raise OtherRankFailed(f"rank 0 could not lock {out}")
        yield


def pose_balance(cfg: PretrainConfig, urls: list[str], keys: set[str] | None) -> PoseTable | None:
    """`data.pose_balance`: the keep table from the shards' yaw histogram (json members only).
    Every rank counts the same shards, so every rank builds the same table without a collective."""
    if not cfg.data.pose_balance:
        return None
    counts, missing = yaw_counts(urls, cfg.data.pose_bins, keys)
    table = pose_table(counts, missing, cfg.data.pose_cap)
    log.info("%s", describe_pose(table))
    return table


def _train(cfg: PretrainConfig, resume: bool, di: D.DistInfo, stopper: GracefulStop) -> dict:
    if not cfg.shards:
        raise ValueError("no shards given: --shards DIR (or set shards: in the config)")
    out, device = Path(cfg.out), di.device
    urls = shard_urls(cfg.shards)
    keys = read_keys(cfg.data.keys) if cfg.data.keys else None
    counted_damage: dict[str, str] = {}
    sched = make_schedule(cfg, cfg.data.epoch_size or count_samples(cfg.shards, keys, counted_damage),
                          di.world_size)
    plan = crop_plan(cfg.crops)
    amp = cfg.amp and bf16_native(device)
    _seed(cfg, di)
    core, optimizer, scaler = _build(cfg, di, sched.base_lr)
    state = (resume_checkpoint(out, core, optimizer, scaler, sched.steps_per_epoch, di, cfg.data.workers, cfg)
             if resume else RunState(fresh_stream(cfg.data.workers)))
    note_damage(state.damaged, counted_damage, di.main)
    pose = pose_balance(cfg, urls, keys)
    _prepare_out(cfg, di)  # only now: a run refused above leaves --out as it was
    if pose is not None and di.main:
        atomic_write_json(out / "pose_balance.json", pose.as_dict())
    checkpoint = functools.partial(save_checkpoint, out, state, core, optimizer, scaler, cfg,
                                   sched.steps_per_epoch, di)
    if cfg.compile:
        core.backbone = torch.compile(core.backbone)
    model = nn.parallel.DistributedDataParallel(
        core, device_ids=[device.index] if device.type == "cuda" else None) if di.world_size > 1 else core
    metrics = TrainLog(out, state.step, sched.stop_step, sched.global_batch, cfg.log_every, di.main)
    watch = CollapseWatch(cfg.model.nmb_prototypes, warmup_steps=cfg.collapse_warmup_steps,
                          patience=cfg.collapse_patience)
    start_step, bad_total, last_loss, stopped = state.step, 0, float("nan"), None
    aug_gen = torch.Generator(device=device)

    while state.step < sched.stop_step and state.epoch < cfg.optim.epochs:
        if cfg.swav.queue_length > 0 and state.epoch >= cfg.swav.epoch_queue_starts and state.queue is None:
            state.queue = make_queue(cfg.swav.queue_length, len(cfg.swav.crops_for_assign), cfg.model.feat_dim,
                                     sched.global_batch, di.world_size, device)
        steps_this_epoch = min(sched.steps_per_epoch, state.stream.steps + (sched.stop_step - state.step))
        loader = make_loader(urls, cfg.crops, cfg.data, cfg.data.batch_size, cfg.seed, state.epoch,
                             steps_this_epoch, di.rank, di.world_size, keys, state.stream,
                             pin_memory=device.type == "cuda", pose=pose)
        for batch in metrics.timed(_unless_stopping(loader, stopper)):
            lr = sched.lr(state.step)
            if cfg.data.augment_on_device:
                crops = augment_batch(cut_crops(batch["images"].to(device, non_blocking=True),
                                                batch["boxes"].to(device, non_blocking=True), plan),
                                      cfg.crops, aug_gen.manual_seed(batch["seed"]))
            else:
                crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
            stats = _sgd_step(cfg, model, core, optimizer, crops, lr, state, amp)
            state.step += 1
            state.stream.update(batch)
            bad_total += batch["bad"]
            if batch["damaged"]:
                note_damage(state.damaged, batch["damaged"], di.main)
            last_loss = stats.loss
            message = watch.update(state.step, stats)
            if message and di.main:
                log.warning(message)
            metrics.step_done(state.step, state.epoch, lr, stats, bad_total)
            if state.step % cfg.checkpoint_every == 0 and state.step < sched.stop_step:
                checkpoint()
            signum = D.max_over_ranks(stopper.signum, device)  # every rank stops at the same step
            if signum and state.step < sched.stop_step:
                stopped = signal.Signals(signum).name
                break
        if stopper.received and not stopped and state.step < sched.stop_step:  # its workers got the signal first
            stopped = stopper.received
        if stopped:
            if state.step % cfg.checkpoint_every:  # else the periodic checkpoint just wrote this step
                checkpoint()
            if di.main:
                log.warning("%s: stopped at step %d with a checkpoint in %s; the same command with "
                            "--resume continues exactly", stopped, state.step, out / "last.pt")
            break
        if state.stream.steps >= sched.steps_per_epoch:
            state.next_epoch(cfg.data.workers)
            if state.step < sched.stop_step:
                checkpoint()
    if not stopped:
        checkpoint(final=True)
    metrics.close()
    return {"steps": state.step, "new_steps": state.step - start_step, "epochs": state.epoch,
            "images": (state.step - start_step) * sched.global_batch, "loss": round(last_loss, 4),
            "ln_k": round(math.log(cfg.model.nmb_prototypes), 4), "bad_samples": bad_total,
            "damaged_shards": len(state.damaged), "collapse_warnings": len(watch.warnings),
            "stopped": stopped, "out": str(out)}


def _sgd_step(cfg: PretrainConfig, model: nn.Module, core: SwAVModel, optimizer: torch.optim.Optimizer,
              crops: list[torch.Tensor], lr: float, state: RunState, amp: bool) -> SwAVStats:
    """One optimiser step of SwAV on a batch's crops (one tensor per crop of the multi-crop plan);
    updates the queue in place and `state.use_queue`. `model` is what runs forward (DDP-wrapped
    under torchrun), `core` the SwAVModel inside it, whose prototypes the step normalises."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    normalize_prototypes(core)
    with torch.autocast(device_type=crops[0].device.type, dtype=torch.bfloat16, enabled=amp):
        z, scores = model(crops)
    s = cfg.swav
    loss, state.use_queue, stats = swav_loss(
        z, scores, cfg.data.batch_size, len(crops), core.prototypes.weight,
        tuple(s.crops_for_assign), s.temperature, s.epsilon, s.sinkhorn_iterations, state.queue, state.use_queue)
    if not math.isfinite(stats.loss):
        raise FloatingPointError(f"loss is {stats.loss} at step {state.step}: lower optim.base_lr")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.step < s.freeze_prototypes_niters:
        drop_prototype_grads(core)
    optimizer.step()
    return stats


def _unless_stopping(loader: Iterable[dict], stopper: GracefulStop) -> Iterator[dict]:
    """The loader's batches. If it fails after a stop signal — a scheduler signalled the whole
    process group and the workers went first — it ends quietly instead, so the trainer can
    checkpoint the last finished step."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - only swallowed when a stop was requested
            if stopper.received is None:
                raise
            log.warning("data loader ended after %s: %s", stopper.received, exc)
            return
        yield batch


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    return resolve(PretrainConfig, args.config, args.overrides, section="pretrain",
                   shards=args.shards, out=args.out)


def one_line(exc: BaseException) -> str:
    """An error as one line. A DataLoader worker's error reaches the trainer with the worker's
    traceback in its text ("Caught DataError in DataLoader worker process 0 ..."): its last line
    is the message."""
    text = str(exc).strip()
    if "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and "." in last.split(": ", 1)[0] else last
    return " ".join(text.split())


def config_from_args_checked(args: argparse.Namespace) -> PretrainConfig:
    """The resolved config, checked (ValueError naming the field)."""
    return config_from_args(args).check()


def run_from_args(args: argparse.Namespace) -> int:
    """Train as the command line asks; the exit status (`facesift pretrain` and this module's main):
    0 done, 1 done but some shards were damaged, 2 the user's to fix (nothing done), 128 +
    signal when stopped with a checkpoint."""
    from facesift.common.logsetup import summary
    try:
        result = train(config_from_args_checked(args), resume=args.resume, restart=args.restart)
    except USER_ERRORS as exc:  # the user's to fix: one line, no traceback
        if not isinstance(exc, OtherRankFailed):  # rank 0 says why
            log.error("%s", one_line(exc))
        return 2
    if env_rank().rank == 0:
        summary("pretrain", **result)
        if os.environ.get(RESULT_ENV):  # the --nproc launcher decides the exit status
            Path(os.environ[RESULT_ENV]).write_text(json.dumps(result))
            return stop_code(result["stopped"])
    if result["stopped"]:
        return stop_code(result["stopped"])
    return DAMAGED_EXIT if result["damaged_shards"] and env_rank().rank == 0 else 0


def main(argv: list[str] | None = None) -> int:
    from facesift.common.logsetup import setup_logging
    parser = argparse.ArgumentParser(prog="python -m facesift.pretrain.train", description=__doc__.split("\n")[0])
    add_args(parser)
    args = parser.parse_args(argv)
    setup_logging(0)
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
