"""`facesift study pose`: does a pose-balanced pretraining set help on turned faces?

Web faces are mostly frontal; the paper's §6 suggests balancing the poses. This study pretrains
SwAV twice on one set with one budget, once on the stream as it is and once with
`data.pose_balance` (pretrain/posebalance.py: the yaw histogram flattened, weights capped), then
fine-tunes landmarks from both at `fractions` (default 2 %) with `seeds` seeds and the same
labelled faces, and scores them on the held-out faces split by the yaw of their annotated
points (`finetune.metrics`: `nme[frontal]` below 15 degrees, `nme[turned]` from 15).

The set is the redundancy study's 0 % set: with `from_study` pointing at a `facesift study
redundancy` folder, its set, its uniform backbone, its budget and its finished 2 % runs are
reused (nothing there is written); without it, the same set is built here first.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from facesift.common.atomic import atomic_write_json, atomic_write_text
from facesift.common.config import bounded_list, save_config, to_dict
from facesift.experiment import (collapse_report, collect, finetune, grid_keys, heldout_split, pretrain,
                                 reuse_results)
from facesift.study_redundancy import SetStudyConfig, StudyConfig

log = logging.getLogger("facesift.study")
PARTS = ("nme", "nme[frontal]", "nme[turned]")


@dataclass
class PoseConfig(SetStudyConfig):
    """About 25 minutes on a 2-core CPU reusing a redundancy study (`from_study`: 31 measured beside
    a test run), about an hour without (both pretrainings and all six fine-tunings). With
    `from_study`, that folder's saved config decides the shared fields (set, budgets, recipes)."""
    from_study: str = ""               # a `facesift study redundancy` work folder to reuse
    fractions: list[float] = bounded_list([0.02], 0.001, 1.0)
    pose_set: list[str] = field(default_factory=list)   # more `--set` for the balanced run (pose_bins, pose_cap)


def shared_config(cfg: PoseConfig) -> PoseConfig:
    """`cfg` with the redundancy study's own choices when it reuses one (they must match)."""
    if not cfg.from_study:
        return cfg
    saved = Path(cfg.from_study) / "study.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved}: not a `facesift study redundancy` folder")
    from facesift.common.config import resolve
    other = resolve(StudyConfig, str(saved), [], section="study")
    out = copy.deepcopy(cfg)
    for name in ("data", "test", "holdout", "exclude", "test_faces", "size", "seed", "dedup", "pretrain_config",
                 "pretrain_epochs", "pretrain_set", "finetune_config", "finetune_set", "trials"):
        if getattr(out, name) != getattr(other, name):
            log.info("%s = %r, as in %s", name, getattr(other, name), saved)
        setattr(out, name, getattr(other, name))
    return out


def uniform_set(cfg: PoseConfig, work: Path) -> tuple[Path, Path, Path, Path, Path | None]:
    """(shards, uniform backbone, training list, held-out list, a grid folder to reuse)."""
    if cfg.from_study:
        study = Path(cfg.from_study).resolve()   # the paths a run's identity names are the study's own (absolute)
        shards, backbone = study / "sets" / "rate-00" / "shards", study / "sets" / "rate-00" / "ckpt" / "backbone.pt"
        if not (shards / "index.json").exists() or not backbone.exists():
            raise FileNotFoundError(f"{study}: its 0 % set or its backbone is not finished yet "
                                    f"(run `facesift study redundancy --work {study}` first)")
        # the study's own lists (its config decides them): a run's identity names them
        train_list, test_list, _, _, _ = heldout_split(Path(cfg.data), cfg.test or None, cfg.holdout, cfg.exclude,
                                                       study, cfg.test_faces)
        return shards, backbone, train_list, test_list, study / "finetune"
    from facesift.analysis.injected import plan_set, write_set
    from facesift.study_redundancy import _originals, _pool, pool_yaws
    train_list, test_list, train, _, _ = _pool(cfg, work)
    paths, yaws = {r["key"]: r["path"] for r in train}, pool_yaws(train)
    originals, _ = _originals(cfg, paths, work, yaws)
    shards = write_set(plan_set(originals, cfg.size, 0.0, cfg.seed), paths, work / "sets" / "rate-00" / "shards",
                       "study-rate-00", cfg.seed, yaws)
    backbone, _ = pretrain(shards, work / "sets" / "rate-00" / "ckpt", Path(cfg.pretrain_config),
                           [f"optim.epochs={cfg.pretrain_epochs}", *cfg.pretrain_set], cfg.threads)
    return shards, backbone, train_list, test_list, None


def run_pose(cfg: PoseConfig, work: Path) -> dict:
    from facesift.common.config import resolve
    from facesift.finetune.config import FinetuneConfig

    t0 = time.time()
    cfg = shared_config(cfg)
    save_config(cfg, work / "study.yaml")
    shards, uniform, train_list, test_list, reuse_from = uniform_set(cfg, work)
    overrides = [f"optim.epochs={cfg.pretrain_epochs}", *cfg.pretrain_set, "data.pose_balance=true", *cfg.pose_set]
    balanced, seconds = pretrain(shards, work / "balanced" / "ckpt", Path(cfg.pretrain_config), overrides, cfg.threads)
    ft = resolve(FinetuneConfig, cfg.finetune_config, cfg.finetune_set, section="finetune", task="landmarks",
                 data=str(train_list), test=str(test_list), seeds=cfg.seeds, trials=cfg.trials)
    ft.fractions = list(cfg.fractions)
    ft.inits = [str(uniform), str(balanced)]
    ft.check()
    out = work / "finetune"
    ft.out = str(out)
    if reuse_from:
        reuse_results(ft, reuse_from, out)
    codes = finetune(copy.deepcopy(ft), out, cfg.ranks, cfg.threads, name="recipe.yaml")
    if any(codes):
        raise RuntimeError(f"fine-tuning exited {codes}; see the logs above (re-run to resume)")
    names = {str(uniform): "uniform", str(balanced): "pose-balanced"}
    keys = grid_keys(ft)
    rows = {part: collect(out / "results", names, metric=part, keys=keys) for part in PARTS}
    table_file = work / "balanced" / "ckpt" / "pose_balance.json"
    result = {"config": to_dict(cfg), "set": str(shards), "test": str(test_list),
              "test_faces": split_sizes(test_list),
              "backbones": {"uniform": str(uniform), "pose-balanced": str(balanced)},
              "pose_table": json.loads(table_file.read_text()) if table_file.exists() else None,
              "collapse": {"uniform": collapse_report(uniform.parent), "pose-balanced": collapse_report(balanced.parent)},
              "pretrain_s": round(seconds, 1), "rows": rows, "session_s": round(time.time() - t0, 1)}
    atomic_write_json(work / "study.json", result)
    atomic_write_text(work / "study.txt", format_table(result) + "\n")
    return result


def split_sizes(test_list: Path) -> dict[str, int]:
    """How many held-out faces are frontal and turned (the split `finetune.metrics` reports)."""
    import numpy as np

    from facesift.common.geometry import estimate_yaw
    from facesift.finetune.datasets import read_landmarks
    from facesift.finetune.metrics import FRONTAL_YAW
    records = [r for r in read_landmarks(test_list) if r["target"].shape[0] == 5]
    if not records:
        return {}
    frontal = int((np.abs(estimate_yaw(np.stack([r["target"] for r in records]))) < FRONTAL_YAW).sum())
    return {"frontal": frontal, "turned": len(records) - frontal}


def format_table(result: dict) -> str:
    def cell(r):
        return f"{r['nme_mean']:.2f} [{r['nme_ci'][0]:.2f}, {r['nme_ci'][1]:.2f}]" if r else "-"
    sizes = result["test_faces"]
    heads = {"nme": "all", "nme[frontal]": f"frontal ({sizes.get('frontal', '?')})",
             "nme[turned]": f"turned ({sizes.get('turned', '?')})"}
    lines = [f"{'pretraining':>14} | {'labels':>6} | " + " | ".join(f"{'NME % ' + heads[p]:>26}" for p in PARTS)]
    by = {(r["init"], r["fraction"], p): r for p in PARTS for r in result["rows"][p]}
    for init in ("uniform", "pose-balanced"):
        for f in result["config"]["fractions"]:
            lines.append(f"{init:>14} | {100 * f:>5g}% | "
                         + " | ".join(f"{cell(by.get((init, float(f), p))):>26}" for p in PARTS))
    lines.append(f"frontal: |yaw| < 15 degrees, estimated from the annotated 5 points; test list {result['test']}")
    return "\n".join(lines)
