"""What a pretraining run saves and how it continues: `last.pt`, `backbone.pt`, exact resume.

`last.pt` holds everything a resumed run needs to take the very step it would have taken:
model, optimiser, AMP scaler, step and epoch (the LR schedule is a pure function of the step),
and per rank its SwAV queue, stream position and RNG states, plus the config for the record.
Its keys are a file format (old checkpoints must keep resuming), so they are written in one
place here. `backbone.pt` is the finished trunk as a plain torchvision `state_dict` — what
analysis and fine-tuning load. Both are written atomically: a kill leaves the previous file.

`last.pt` is read back with torch's `weights_only` unpickler (plus numpy's array type, for the
RNG states) and checked before anything is loaded from it: a damaged file, or one from a run
whose model or optimiser had another shape (`model.arch` changed between runs), is a one-line
error (exit 2) naming what differs, and the file is left as it is.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facesift.pretrain import distributed as D
from facesift.pretrain.backbone import NotACheckpoint, safe_load
from facesift.pretrain.data import StreamState
from facesift.common.atomic import atomic_write
from facesift.common.config import to_dict

log = logging.getLogger("facesift.pretrain")
LAST = "last.pt"
BACKBONE = "backbone.pt"
REQUIRED = ("model", "optimizer", "step", "epoch")
# config fields that decide the shapes of the model's and the optimiser's state
SHAPE_FIELDS = (("model", "arch"), ("model", "hidden_mlp"), ("model", "feat_dim"), ("model", "nmb_prototypes"),
                ("optim", "lars"), ("optim", "adamw"), ("optim", "exclude_bn_bias"))


def _numpy_globals() -> list:
    """What numpy arrays (the RNG states in last.pt) need from the weights_only unpickler: array
    reconstruction only, no callable of the file's choosing. Both numpy 2's and numpy 1's names."""
    from numpy._core import multiarray
    return [multiarray._reconstruct, (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, np.dtypes.UInt32DType]


class ResumeError(ValueError):
    """`--resume` cannot continue from OUT/last.pt; the message says why, the file is untouched."""


@dataclass
class RunState:
    """Where a run stands beyond its weights: what the loop advances and a checkpoint restores.

    `queue`/`use_queue`/`stream` are this rank's own; `step`/`epoch` are the same on every rank."""
    stream: StreamState
    step: int = 0
    epoch: int = 0
    queue: torch.Tensor | None = None
    use_queue: bool = False
    damaged: dict[str, str] = field(default_factory=dict)  # damaged shard URL -> its warning line, all ranks so far

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
        step = read_last(path).get("step", "?")
    except NotACheckpoint as exc:  # only for the message
        step = f"unreadable: {exc.reason}"
    raise FileExistsError(f"{path} exists (step {step}): add --resume to continue that run, "
                          "or --restart to start over and replace it")


def read_last(path: Path) -> dict:
    """OUT/last.pt as a dict, loaded safely; `NotACheckpoint` if it is damaged or holds something else."""
    what = "pretrain checkpoint"
    ck = safe_load(path, what, allow=_numpy_globals())
    if not isinstance(ck, Mapping):
        raise NotACheckpoint(path, f"holds a {type(ck).__name__}, not a training state", what)
    missing = [k for k in REQUIRED if k not in ck]
    if missing:
        raise NotACheckpoint(path, f"no {', '.join(missing)} (keys: {', '.join(map(str, list(ck)[:6]))}): "
                                   "a backbone.pt or another program's file?", what)
    return dict(ck)


def shape_changes(saved: Mapping | None, cfg: Any) -> list[str]:
    """The config fields that shape the model/optimiser and differ from the checkpoint's config."""
    if not isinstance(saved, Mapping):
        return []
    changes = []
    for section, name in SHAPE_FIELDS:
        old = saved.get(section, {}).get(name) if isinstance(saved.get(section), Mapping) else None
        new = getattr(getattr(cfg, section), name)
        if old is not None and old != new:
            changes.append(f"{section}.{name}={old} but the config says {new}")
    return changes


def state_dict_changes(saved: Mapping[str, Any], model: nn.Module, n: int = 4) -> list[str]:
    """The first few missing / unexpected keys and shape mismatches between `saved` and `model`."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in saved]
    unexpected = [k for k in saved if k not in mine]
    shapes = [f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}" for k, v in mine.items()
              if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape]
    out = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (checkpoint vs model)", shapes)):
        if items:
            more = f", ... {len(items) - n} more" if len(items) > n else ""
            out.append(f"{label}: {', '.join(items[:n])}{more}")
    return out


def plain_state_dict(module: nn.Module) -> dict[str, Any]:
    """`module.state_dict()` with torch.compile's `_orig_mod.` wrappers taken out of the keys, so
    that a checkpoint written with `compile: true` resumes (before compiling) and loads anywhere."""
    return {k.replace("_orig_mod.", ""): v for k, v in module.state_dict().items()}


def save_checkpoint(out: Path, state: RunState, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, cfg: Any, steps_per_epoch: int, di: D.DistInfo,
                    final: bool = False) -> None:
    """Write OUT/last.pt (and with `final`, OUT/backbone.pt). Every rank must call it: each
    sends its own queue, stream and RNG to rank 0, which writes; all wait until it has."""
    per_rank = D.gather_objects({
        "queue": state.queue.cpu() if state.queue is not None else None, "use_queue": state.use_queue,
        "stream": asdict(state.stream), "rng": rng_state(), "damaged": dict(state.damaged)})
    if di.main:
        for mine in per_rank[1:]:  # what the other ranks' streams found: named once, here
            note_damage(state.damaged, mine["damaged"], True)
        save_torch({"model": plain_state_dict(model), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "step": state.step, "epoch": state.epoch,
                    "steps_per_epoch": steps_per_epoch, "world_size": di.world_size,
                    "ranks": per_rank, "config": to_dict(cfg), "damaged": dict(state.damaged)}, out / LAST)
        if final:
            backbone = {k: v.detach().cpu().contiguous() for k, v in plain_state_dict(model.backbone).items()}
            save_torch(backbone, out / BACKBONE)
    D.barrier()


def note_damage(known: dict[str, str], found: Mapping[str, str], main: bool) -> None:
    """Add newly found damaged shards (URL -> its warning line) to `known`; each line is logged
    once, on rank 0, the first time any rank reports the shard."""
    for url, line in found.items():
        if url not in known:
            known[url] = line
            if main:
                log.warning("%s", line)


def resume_checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, steps_per_epoch: int, di: D.DistInfo,
                      workers: int, cfg: Any = None) -> RunState:
    """Load OUT/last.pt into the model, optimiser and scaler (call before torch.compile and DDP
    wrap them); returns this rank's state, or a fresh one when there is no checkpoint yet.

    On the same number of ranks the run continues exactly (queue, stream position, RNG); on a
    different number the weights and step carry over and the per-rank parts restart. A damaged
    file, or one that does not fit the model (say `model.arch` changed), is a `ResumeError` raised
    before anything is loaded into the model: nothing is half-resumed and the file stays."""
    path = out / LAST
    state = RunState(fresh_stream(workers))
    if not path.exists():
        if di.main:
            log.info("--resume: no %s yet, starting fresh", path)
        return state
    keep = "; it is left as it is (--restart starts over and replaces it)"
    try:
        ck = read_last(path)
    except NotACheckpoint as exc:
        raise ResumeError(f"cannot resume: {exc}{keep}") from None
    changes = shape_changes(ck.get("config"), cfg) if cfg is not None else []
    if changes:
        raise ResumeError(f"cannot resume from {path}: the checkpoint was trained with "
                          f"{'; '.join(changes)}{keep}")
    saved = ck["model"]
    diffs = state_dict_changes(saved, model) if isinstance(saved, Mapping) else ["no model state_dict"]
    if diffs:
        raise ResumeError(f"cannot resume from {path}: its model does not fit this config's "
                          f"({'; '.join(diffs)}){keep}")
    try:
        model.load_state_dict(saved)
        optimizer.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ResumeError(f"cannot resume from {path}: its optimiser state does not fit this config's "
                          f"(optim.lars, optim.adamw or optim.exclude_bn_bias changed?): {first[:200]}{keep}") from None
    state.step, state.epoch = ck["step"], ck["epoch"]
    state.damaged = dict(ck.get("damaged") or {})
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
