"""The mean-shape baseline of a landmark test set: what a model that has not learned to localise scores.

Predicting the training pool's average face (in the evaluation crop's coordinates) for every
test face needs no learning, so a fine-tuned model that does not beat it has memorised a
position, not found the face. The grid stores it with every landmark result and `facesift curve`
prints it beside the table; `tools/bench_fewshot.py` reads the same number.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facesift.common.atomic import atomic_write_json
from facesift.finetune.config import stable_hash
from facesift.finetune.datasets import load_image


def eval_points(task, records: list[dict]) -> np.ndarray:
    """Each record's landmarks as the evaluation sees them (after the test-time crop), (N, K, 2)."""
    transform = task.transform(False)
    return np.stack([transform(load_image(r["path"]), r)[1].numpy() for r in records])


_MEANS: dict[str, np.ndarray] = {}


def mean_points(task, records: list[dict]) -> np.ndarray:
    """The records' mean landmarks in the evaluation crop, (K, 2), kept per process: the search's
    trials and every evaluation of a run ask for the same training records' mean, and each
    computation reads every image."""
    key = stable_hash({"keys": [r["key"] for r in records], "paths": [r["path"] for r in records],
                       "size": task.cfg.image_size, "margin": task.cfg.augment.box_margin})
    if key not in _MEANS:
        _MEANS[key] = eval_points(task, records).mean(0)
    return _MEANS[key]


def mean_shape_metrics(task, train: list[dict], test: list[dict]) -> dict:
    """The task's metrics for predicting the training pool's mean shape on every test face."""
    mean = mean_points(task, train)
    gt = eval_points(task, test)
    return task.metrics(np.repeat(mean[None], len(gt), 0), gt, test)


def cached_mean_shape(task, train: list[dict], test: list[dict], out: Path) -> dict:
    """`mean_shape_metrics`, kept in `<out>/baseline/<hash>.json` (it reads every image once)."""
    key = stable_hash({"train": sorted(r["key"] for r in train), "test": sorted(r["key"] for r in test),
                       "size": task.cfg.image_size, "margin": task.cfg.augment.box_margin,
                       "norm": task.cfg.nme_norm})
    path = Path(out) / "baseline" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    metrics = mean_shape_metrics(task, train, test)
    atomic_write_json(path, metrics)
    return metrics
