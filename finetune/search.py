"""Hyper-parameter search per (task, dataset, init, fraction) — paper 3.3, Fig. 2.

Searches the learning rate, the schedule length and the backbone's relative learning rate.
Each trial trains on the training fraction minus a validation split carved from it
(`fractions.validation_split`) and is scored on that split with the task's headline metric.
The test set is never given to this module. Trials are cached as JSON under
`<out>/search/<search key>/<trial hash>.json`, so an interrupted search resumes, a larger
`--trials` budget only runs the new trials, and all seeds of a data point share one search.
"""
from __future__ import annotations

import itertools
import json
import math
import logging
import random
from pathlib import Path

from facesift.finetune import trainer
from facesift.finetune.config import FinetuneConfig, SearchSpace, stable_hash
from facesift.finetune.fractions import validation_split
from facesift.finetune.trainer import HParams
from facesift.common.atomic import atomic_write_json

log = logging.getLogger(__name__)


def scaled_steps(steps: int, n: int | None, space: SearchSpace) -> int:
    """The schedule for `n` labelled images: `steps` itself, or scaled by sqrt(n / steps_images).

    Why sqrt: a fixed number of steps over-fits 2 % of the labels (hundreds of epochs) and a
    fixed number of epochs under-trains it; the square root sits between the two."""
    if not space.steps_images or n is None:
        return steps
    return max(space.min_steps, int(round(steps * math.sqrt(n / space.steps_images))))


def default_hparams(space: SearchSpace, n: int | None = None) -> HParams:
    return HParams(lr=space.lr[0], steps=scaled_steps(space.steps[0], n, space), backbone_lr=space.backbone_lr[0])


def candidates(space: SearchSpace, seed: int = 0, n: int | None = None) -> list[HParams]:
    """Every combination: the default first, the rest in a fixed pseudo-random order
    (a budget of N trials samples the space instead of sweeping one axis). `n`: the labelled
    images the final run trains on (the schedule scales with it, see `scaled_steps`)."""
    allc = [HParams(lr, scaled_steps(steps, n, space), blr)
            for lr, steps, blr in itertools.product(space.lr, space.steps, space.backbone_lr)]
    first = default_hparams(space, n)
    rest = [c for c in dict.fromkeys(allc) if c != first]   # scaled steps can coincide
    random.Random(seed).shuffle(rest)
    return [first] + rest


def search(cfg: FinetuneConfig, task, records: list[dict], init: str, search_key: dict, out: Path,
           device=None) -> tuple[HParams, list[dict], dict]:
    """(best hyper-parameters, the trials, {fit, val} sizes) for one data point.

    `records` is the labelled training fraction (for the search seed); nothing else is read.
    With `cfg.trials == 1` there is nothing to choose: the defaults, no training.
    """
    space = cfg.search
    if cfg.trials <= 1:
        return default_hparams(space, len(records)), [], {"fit": len(records), "val": 0}
    fit, val = validation_split(records, cfg.val_fraction, seed=cfg.split_seed, minimum=cfg.min_val)
    key = stable_hash(search_key)
    folder = out / "search" / key
    trials = []
    # trials train on `fit` with the schedule of the full fraction, so the chosen steps are the final run's
    for hp in candidates(space, seed=int(key[:8], 16), n=len(records))[:cfg.trials]:
        path = folder / f"{stable_hash(hp.as_dict())}.json"
        if path.exists():
            trials.append(json.loads(path.read_text()))
            continue
        model = trainer.build_model(task, init, cfg.arch, cfg.adapt, seed=cfg.split_seed)
        losses = trainer.train(model, task, fit, hp, cfg.train, seed=cfg.split_seed, device=device)
        metrics = trainer.evaluate(model, task, val, cfg.train, device=device, reference=fit)
        trial = {"hparams": hp.as_dict(), "val_metrics": metrics, "final_loss": losses[-1],
                 "fit": len(fit), "val": len(val), "search_key": search_key}
        atomic_write_json(path, trial)
        log.info("trial %s: val %s=%.4g", hp.as_dict(), task.primary, metrics[task.primary])
        trials.append(trial)
    sign = 1 if task.lower_is_better else -1
    scored = [t for t in trials if t["val_metrics"].get(task.primary) == t["val_metrics"].get(task.primary)]  # drop NaN
    if not scored:
        raise RuntimeError(f"every search trial gave NaN {task.primary}")
    best = min(scored, key=lambda t: sign * t["val_metrics"][task.primary])
    return HParams(**best["hparams"]), trials, {"fit": len(fit), "val": len(val)}
