"""The SwAV training loop: streaming batches in, checkpoints and logs out; one CPU to many GPUs.

Run as `facesift pretrain ...` (one process, or `--nproc G` which re-launches this module under
`torch.distributed.run`), or directly:

    torchrun --nproc_per_node=G -m facesift.pretrain.train --shards DIR --out DIR --config configs/gpu-r50.yaml

Everything a resumed run needs is in `last.pt` (model, optimiser, AMP scaler, step — the LR
schedule is a pure function of it —, each rank's queue, stream position and RNG states, and
the config), written atomically every `checkpoint_every` steps and at every epoch's end.
"""
from __future__ import annotations

import argparse
import csv
import functools
import io
import logging
import math
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facesift.pretrain import distributed as D
from facesift.pretrain.config import PretrainConfig, add_args
from facesift.pretrain.data import StreamState, count_samples, make_loader, read_keys
from facesift.pretrain.multicrop import augment_batch, crop_plan, cut_crops
from facesift.pretrain.optim import LARS, lr_at, param_groups, scaled_lr
from facesift.pretrain.swav import (CollapseWatch, SwAVModel, drop_prototype_grads, make_queue,
                           normalize_prototypes, swav_loss)
from facesift.shards.index import shard_urls
from facesift.common.atomic import atomic_write, atomic_write_text, remove_stale_temps
from facesift.common.config import resolve, save_config, to_dict
from facesift.common.stopping import GracefulStop, stop_code

log = logging.getLogger("facesift.pretrain")
CSV_FIELDS = ["step", "epoch", "loss", "lr", "images_per_s", "data_wait", "entropy",
              "prototypes_used", "max_share", "bad_samples"]


def save_torch(obj, path: Path) -> None:
    """torch.save to a temporary sibling, then os.replace: never a truncated checkpoint."""
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _trim_csv(path: Path, last_step: int) -> None:
    """On resume, drop rows logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= last_step]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def bf16_native(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: CUDA, or a CPU with AVX512-BF16 / AMX (where
    oneDNN's bf16 convolutions are ~1.7× faster than fp32: 50 vs 29 img/s for the benchmark's
    resnet18 step). Elsewhere bf16 would be emulated, slower than fp32: keep fp32."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _cpu_bf16()


@functools.lru_cache(maxsize=None)
def _cpu_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, stay in fp32
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


def train(cfg: PretrainConfig, resume: bool = False, restart: bool = False) -> dict:
    """Pretrain; returns the run's summary counts (also printed by the CLI).

    An existing OUT/last.pt is never overwritten by accident: without `resume` (continue it)
    or `restart` (start over) that is an error, before any process group or data is touched."""
    ckpt_path = Path(cfg.out) / "last.pt"
    if ckpt_path.exists() and not (resume or restart):
        try:
            step = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("step", "?")
        except Exception as exc:  # noqa: BLE001 - only for the message
            step = f"unreadable: {type(exc).__name__}"
        raise FileExistsError(f"{ckpt_path} exists (step {step}): add --resume to continue that run, "
                              "or --restart to start over and replace it")
    dist_info = D.init_distributed(cfg.device)
    try:
        with GracefulStop() as stopper:
            return _train(cfg, resume, dist_info, stopper)
    finally:
        D.cleanup()


def _train(cfg: PretrainConfig, resume: bool, di: D.DistInfo, stopper: GracefulStop) -> dict:
    if not cfg.shards:
        raise ValueError("no shards given: --shards DIR (or set shards: in the config)")
    out = Path(cfg.out)
    device = di.device
    cuda = device.type == "cuda"
    if di.main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        save_config(cfg, out / "pretrain.yaml")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    urls = shard_urls(cfg.shards)
    keys = read_keys(cfg.data.keys) if cfg.data.keys else None
    n_samples = cfg.data.epoch_size or count_samples(cfg.shards, keys)
    global_batch = cfg.data.batch_size * di.world_size
    steps_per_epoch = n_samples // global_batch
    if steps_per_epoch < 1:
        raise ValueError(f"{n_samples} samples per epoch is less than one global batch ({global_batch}): "
                         "lower data.batch_size or set data.epoch_size")
    total_steps = cfg.optim.epochs * steps_per_epoch
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    base_lr = scaled_lr(cfg.optim.base_lr, global_batch, cfg.optim.reference_batch)
    final_lr = scaled_lr(cfg.optim.final_lr, global_batch, cfg.optim.reference_batch)
    plan = crop_plan(cfg.crops)
    n_crops = len(plan)
    assign = tuple(cfg.swav.crops_for_assign)

    model = SwAVModel(cfg.model.arch, cfg.model.hidden_mlp, cfg.model.feat_dim, cfg.model.nmb_prototypes)
    if di.world_size > 1 and cfg.model.sync_bn:
        if cuda:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif di.main:
            log.info("SyncBatchNorm needs CUDA: on CPU each rank normalises with its own batch statistics")
    model = model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    core = model
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.exclude_bn_bias)
    if cfg.optim.lars:
        optimizer = LARS(groups, lr=base_lr, momentum=cfg.optim.momentum,
                         weight_decay=cfg.optim.weight_decay, trust_coefficient=cfg.optim.trust_coefficient)
    else:
        optimizer = torch.optim.SGD(groups, lr=base_lr, momentum=cfg.optim.momentum)
    amp = cfg.amp and bf16_native(device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling; kept for the format

    step, epoch, queue, use_queue = 0, 0, None, False
    stream = StreamState(num_workers=max(1, cfg.data.workers))
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        step, epoch = ck["step"], ck["epoch"]
        if ck.get("steps_per_epoch") != steps_per_epoch:
            log.warning("steps per epoch changed (%s -> %s): the schedule continues by step",
                        ck.get("steps_per_epoch"), steps_per_epoch)
        if ck.get("world_size") == di.world_size:
            rank_state = ck["ranks"][di.rank]
            queue = rank_state["queue"].to(device) if rank_state["queue"] is not None else None
            use_queue = rank_state["use_queue"]
            stream = StreamState(**rank_state["stream"])
            _set_rng_state(rank_state["rng"])
            if stream.steps >= steps_per_epoch:  # saved after an epoch's last step, before it advanced
                epoch, stream, use_queue = epoch + 1, StreamState(num_workers=max(1, cfg.data.workers)), False
        else:
            log.warning("resuming on %d ranks (checkpoint: %s): queue and stream positions restart",
                        di.world_size, ck.get("world_size"))
        if di.main:
            log.info("resumed from %s at step %d (epoch %d)", ckpt_path, step, epoch)
    elif resume and di.main:
        log.info("--resume: no %s yet, starting fresh", ckpt_path)

    if cfg.compile:
        core.backbone = torch.compile(core.backbone)
    if di.world_size > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)

    def checkpoint(final: bool = False) -> None:
        per_rank = D.gather_objects({
            "queue": queue.cpu() if queue is not None else None, "use_queue": use_queue,
            "stream": asdict(stream), "rng": _rng_state()})
        if di.main:
            state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                     "steps_per_epoch": steps_per_epoch, "world_size": di.world_size,
                     "ranks": per_rank, "config": to_dict(cfg)}
            save_torch(state, ckpt_path)
            if final:
                backbone = {k: v.detach().cpu().contiguous() for k, v in core.backbone.state_dict().items()}
                save_torch({k.replace("_orig_mod.", ""): v for k, v in backbone.items()}, out / "backbone.pt")
        D.barrier()

    writer = csv_fh = csv_writer = None
    if di.main:
        csv_path = out / "metrics.csv"
        if step:
            _trim_csv(csv_path, step)
        new_csv = not csv_path.exists() or step == 0
        csv_fh = csv_path.open("w" if new_csv else "a", newline="")
        csv_writer = csv.DictWriter(csv_fh, fieldnames=CSV_FIELDS)
        if new_csv:
            csv_writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(out / "tb"), purge_step=step or None)
        except ImportError:  # tensorboard is a dependency, but logging must never stop a run
            log.warning("tensorboard not importable: CSV logs only")

    watch = CollapseWatch(cfg.model.nmb_prototypes, warmup_steps=cfg.collapse_warmup_steps,
                          patience=cfg.collapse_patience)
    bar = None
    if di.main:
        from tqdm import tqdm
        bar = tqdm(total=stop_step, initial=step, desc="pretrain", unit="step", dynamic_ncols=True,
                   disable=None)
    bad_total, images, last_loss = 0, 0, float("nan")
    t_window, wait_window, n_window = time.perf_counter(), 0.0, 0
    start_step = step
    aug_gen = torch.Generator(device=device)

    stopped: str | None = None
    while step < stop_step and epoch < cfg.optim.epochs:
        if cfg.swav.queue_length > 0 and epoch >= cfg.swav.epoch_queue_starts and queue is None:
            queue = make_queue(cfg.swav.queue_length, len(assign), cfg.model.feat_dim, global_batch,
                               di.world_size, device)
        steps_this_epoch = min(steps_per_epoch, stream.steps + (stop_step - step))
        loader = make_loader(urls, cfg.crops, cfg.data, cfg.data.batch_size, cfg.seed, epoch,
                             steps_this_epoch, di.rank, di.world_size, keys, stream, pin_memory=cuda)
        t_wait = time.perf_counter()
        for batch in _unless_stopping(loader, stopper):
            wait_window += time.perf_counter() - t_wait
            lr = lr_at(step, total_steps, warmup_steps, base_lr, final_lr,
                       scaled_lr(cfg.optim.start_warmup, global_batch, cfg.optim.reference_batch))
            for group in optimizer.param_groups:
                group["lr"] = lr
            normalize_prototypes(core)
            if cfg.data.augment_on_device:
                cut = cut_crops(batch["images"].to(device, non_blocking=True),
                                batch["boxes"].to(device, non_blocking=True), plan)
                crops = augment_batch(cut, cfg.crops, aug_gen.manual_seed(batch["seed"]))
            else:
                crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                z, scores = model(crops)
            loss, use_queue, stats = swav_loss(
                z, scores, cfg.data.batch_size, n_crops, core.prototypes.weight, assign,
                cfg.swav.temperature, cfg.swav.epsilon, cfg.swav.sinkhorn_iterations, queue, use_queue)
            if not math.isfinite(stats.loss):
                raise FloatingPointError(f"loss is {stats.loss} at step {step}: lower optim.base_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step < cfg.swav.freeze_prototypes_niters:
                drop_prototype_grads(core)
            optimizer.step()
            step += 1
            stream.update(batch)
            bad_total += batch["bad"]
            images += global_batch
            n_window += 1
            last_loss = stats.loss
            message = watch.update(step, stats)
            if message and di.main:
                log.warning(message)
            if di.main and (step % cfg.log_every == 0 or step == stop_step):
                elapsed = time.perf_counter() - t_window
                row = {"step": step, "epoch": epoch, "loss": round(stats.loss, 5), "lr": lr,
                       "images_per_s": round(n_window * global_batch / max(elapsed, 1e-9), 2),
                       "data_wait": round(wait_window / max(elapsed, 1e-9), 4),
                       "entropy": round(stats.entropy, 5), "prototypes_used": stats.prototypes_used,
                       "max_share": round(stats.max_share, 4), "bad_samples": bad_total}
                csv_writer.writerow(row)
                csv_fh.flush()
                if writer:
                    for k, v in row.items():
                        if k not in ("step", "epoch"):
                            writer.add_scalar(f"pretrain/{k}", v, step)
                bar.set_postfix(loss=f"{stats.loss:.3f}", ent=f"{stats.entropy:.2f}",
                                protos=stats.prototypes_used, ips=row["images_per_s"])
                t_window, wait_window, n_window = time.perf_counter(), 0.0, 0
            if bar is not None:
                bar.update(1)
            if step % cfg.checkpoint_every == 0 and step < stop_step:
                checkpoint()
            signum = D.max_over_ranks(stopper.signum, device)  # every rank stops at the same step
            if signum and step < stop_step:
                stopped = signal.Signals(signum).name
                break
            t_wait = time.perf_counter()
        if stopper.received and not stopped and step < stop_step:  # its workers got the signal first
            stopped = stopper.received
        if stopped:
            if step % cfg.checkpoint_every:  # else the periodic checkpoint just wrote this step
                checkpoint()
            if di.main:
                log.warning("%s: stopped at step %d with a checkpoint in %s; the same command with "
                            "--resume continues exactly", stopped, step, ckpt_path)
            break
        if stream.steps >= steps_per_epoch:
            epoch, stream, use_queue = epoch + 1, StreamState(num_workers=max(1, cfg.data.workers)), False
            if step < stop_step:
                checkpoint()
    if not stopped:
        checkpoint(final=True)
    if bar is not None:
        bar.close()
    if writer:
        writer.close()
    if csv_fh:
        csv_fh.close()
    return {"steps": step, "new_steps": step - start_step, "epochs": epoch, "images": images,
            "loss": round(last_loss, 4), "ln_k": round(math.log(cfg.model.nmb_prototypes), 4),
            "bad_samples": bad_total, "collapse_warnings": len(watch.warnings), "stopped": stopped,
            "out": str(out)}


def _unless_stopping(loader, stopper: GracefulStop):
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


def run_from_args(args: argparse.Namespace) -> int:
    """Train as the command line asks; the exit status (`facesift pretrain` and this module's main)."""
    import os

    from facesift.common.logsetup import summary
    try:
        result = train(config_from_args(args), resume=args.resume, restart=args.restart)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:  # the user's to fix: no traceback
        log.error("%s", exc)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        summary("pretrain", **result)
    return stop_code(result["stopped"])


def main(argv: list[str] | None = None) -> int:
    from facesift.common.logsetup import setup_logging
    parser = argparse.ArgumentParser(prog="python -m facesift.pretrain.train", description=__doc__.split("\n")[0])
    add_args(parser)
    args = parser.parse_args(argv)
    setup_logging(0)
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
