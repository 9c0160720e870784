"""What a pretraining run saves and how it continues: `last.pt`, `backbone.pt`, exact resume.

`last.pt` holds everything a resumed run needs to take the very step it would have taken:
model, optimiser, AMP scaler, step and epoch (the LR schedule is a pure function of the step),
and per rank its SwAV queue, stream position and RNG states, plus the config for the record.
Its keys are a file format (old checkpoints must keep resuming), so they are written in one
place here. `backbone.pt` is the finished trunk as a plain torchvision `state_dict` — what
analysis and fine-tuning load. Both are written atomically: a kill leaves the previous file.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facesift.pretrain import distributed as D
from facesift.pretrain.data import StreamState
from facesift.common.atomic import atomic_write
from facesift.common.config import to_dict

log = logging.getLogger("facesift.pretrain")
LAST = "last.pt"
BACKBONE = "backbone.pt"


@dataclass
class RunState:
    """Where a run stands beyond its weights: what the loop advances and a checkpoint restores.

    `queue`/`use_queue`/`stream` are this rank's own; `step`/`epoch` are the same on every rank."""
    stream: StreamState
    step: int = 0
    epoch: int = 0
    queue: torch.Tensor | None = None
    use_queue: bool = False

    def next_epoch(self, workers: int) -> None:
        """A new epoch: its stream from the start, and `use_queue` reset as the reference does."""
        self.epoch, self.stream, self.use_queue = self.epoch + 1, fresh_stream(workers), False


def fresh_stream(workers: int) -> StreamState:
    """An epoch's start; one worker role even with `workers: 0` (the main process loads)."""
    return StreamState(num_workers=max(1, workers))


def save_torch(obj: Any, path: Path) -> None:
    """torch.save to a temporary sibling, then os.replace: never a truncated checkpoint."""
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def refuse_overwrite(out: str | Path, resume: bool, restart: bool) -> None:
    """An existing OUT/last.pt is never replaced by accident: without `resume` (continue it) or
    `restart` (start over) that is an error, raised before any process group or data is touched."""
    path = Path(out) / LAST
    if not path.exists() or resume or restart:
        return
    try:
        step = torch.load(path, map_location="cpu", weights_only=False).get("step", "?")
    except Exception as exc:  # noqa: BLE001 - only for the message
        step = f"unreadable: {type(exc).__name__}"
    raise FileExistsError(f"{path} exists (step {step}): add --resume to continue that run, "
                          "or --restart to start over and replace it")


def save_checkpoint(out: Path, state: RunState, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, cfg: Any, steps_per_epoch: int, di: D.DistInfo,
                    final: bool = False) -> None:
    """Write OUT/last.pt (and with `final`, OUT/backbone.pt). Every rank must call it: each
    sends its own queue, stream and RNG to rank 0, which writes; all wait until it has."""
    per_rank = D.gather_objects({
        "queue": state.queue.cpu() if state.queue is not None else None, "use_queue": state.use_queue,
        "stream": asdict(state.stream), "rng": rng_state()})
    if di.main:
        save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "step": state.step, "epoch": state.epoch,
                    "steps_per_epoch": steps_per_epoch, "world_size": di.world_size,
                    "ranks": per_rank, "config": to_dict(cfg)}, out / LAST)
        if final:
            backbone = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
            save_torch({k.replace("_orig_mod.", ""): v for k, v in backbone.items()}, out / BACKBONE)
    D.barrier()


def resume_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, steps_per_epoch: int, di: D.DistInfo,
                      workers: int) -> RunState:
    """Load OUT/last.pt into the model, optimiser and scaler (call before torch.compile and DDP
    wrap them); returns this rank's state, or a fresh one when there is no checkpoint yet.

    On the same number of ranks the run continues exactly (queue, stream position, RNG); on a
    different number the weights and step carry over and the per-rank parts restart."""
    path = out / LAST
    state = RunState(fresh_stream(workers))
    if not path.exists():
        if di.main:
            log.info("--resume: no %s yet, starting fresh", path)
        return state
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    state.step, state.epoch = ck["step"], ck["epoch"]
    if ck.get("steps_per_epoch") != steps_per_epoch:
        log.warning("steps per epoch changed (%s -> %s): the schedule continues by step",
                    ck.get("steps_per_epoch"), steps_per_epoch)
    if ck.get("world_size") == di.world_size:
        mine = ck["ranks"][di.rank]
        state.queue = mine["queue"].to(di.device) if mine["queue"] is not None else None
        state.use_queue = mine["use_queue"]
        state.stream = StreamState(**mine["stream"])
        set_rng_state(mine["rng"])
        if state.stream.steps >= steps_per_epoch:  # saved after an epoch's last step, before it advanced
            state.next_epoch(workers)
    else:
        log.warning("resuming on %d ranks (checkpoint: %s): queue and stream positions restart",
                    di.world_size, ck.get("world_size"))
    if di.main:
        log.info("resumed from %s at step %d (epoch %d)", path, state.step, state.epoch)
    return state
