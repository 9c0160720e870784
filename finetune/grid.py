"""The whole experiment grid: inits x fractions x seeds, one result file per run, resumable.

A run's identity is a hash of everything that changes its outcome (task, dataset, test split,
init and the checkpoint's digest, fraction, seed, adaptation, search space and budget, training
and augmentation settings, distillation). Its result lands in `<out>/results/<hash>.json`
(atomically); a re-run skips every run whose file exists and resumes a half-trained run from
`<out>/runs/<hash>/last.pt`.

Multi-GPU (torchrun): ranks split the grid — each rank takes whole runs on its own GPU, with
no gradient synchronisation. Fine-tuning runs are many and small, so this scales linearly and
needs no process group; when the search is on, a data point's seeds stay on one rank so its
search (shared by the seeds, cached on disk) runs once.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from facesift.common.atomic import atomic_write_json, remove_stale_temps
from facesift.common.config import to_dict
from facesift.common.progress import progress
from facesift.common.runtime import env_rank
from facesift.finetune import distill as distill_mod
from facesift.finetune import trainer
from facesift.finetune.config import FinetuneConfig, file_digest, stable_hash
from facesift.finetune.fractions import fraction_subset, keyed_subset, parse_fraction_keys, read_key_list
from facesift.finetune.search import search
from facesift.finetune.tasks import TaskData, load_task
from facesift.pretrain.backbone import NotACheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    init: str
    fraction: float
    seed: int


def plan(cfg: FinetuneConfig) -> list[Run]:
    return [Run(init, float(f), seed) for init in cfg.inits for f in cfg.fractions for seed in range(cfg.seeds)]


def rank_runs(runs: list[Run], rank: int, world: int, by_data_point: bool) -> list[Run]:
    """This rank's share: round-robin over runs, or over (init, fraction) data points."""
    if world <= 1:
        return runs
    if not by_data_point:
        return [r for i, r in enumerate(runs) if i % world == rank]
    points = list(dict.fromkeys((r.init, r.fraction) for r in runs))
    mine = {p for i, p in enumerate(points) if i % world == rank}
    return [r for r in runs if (r.init, r.fraction) in mine]


def _init_identity(init: str, arch: str, cache: dict) -> dict:
    if init == "scratch":
        return {"init": "scratch", "arch": arch}
    if init not in cache:
        if not Path(init).is_file():
            raise FileNotFoundError(f"initialisation {init!r}: no such checkpoint (or use 'scratch')")
        cache[init] = file_digest(init)
    return {"init": init, "sha256": cache[init]}


def _settings(cfg: FinetuneConfig) -> dict:
    """Every config field that changes a run's outcome (not where it is written, not the grid axes)."""
    d = to_dict(cfg)
    for k in ("out", "inits", "fractions", "seeds", "fraction_keys"):   # a run's own key list: `_key_list_id`
        d.pop(k)
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("workers", "device", "ckpt_every", "eval_batch_size", "threads")}
    return d


def _key_list_id(cfg: FinetuneConfig, run: Run) -> str | None:
    """The digest of the key list this run trains on (None: the grid's own hash subset). Its
    content, not its path: a list rewritten under the same name is another run, and a grid that
    names other fractions' lists beside it is not."""
    lists = parse_fraction_keys(cfg.fraction_keys)
    if run.fraction not in lists:
        return None
    keys = sorted(read_key_list(lists[run.fraction].replace("{seed}", str(run.seed))))
    return stable_hash({"keys": keys})


def run_identity(cfg: FinetuneConfig, data: TaskData, run: Run, init_id: dict) -> dict:
    return {"settings": _settings(cfg), "n_train_pool": len(data.train), "n_test": len(data.test),
            "init": init_id, "fraction": run.fraction, "seed": run.seed, "keys": _key_list_id(cfg, run)}


def training_records(cfg: FinetuneConfig, data: TaskData, fraction: float, seed: int) -> list[dict]:
    lists = parse_fraction_keys(cfg.fraction_keys)
    if fraction in lists:   # a `{seed}` in the path: one list per seed (a seeded selection method)
        return keyed_subset(data.train, read_key_list(lists[fraction].replace("{seed}", str(seed))))
    records = fraction_subset(data.train, fraction, seed)
    if len(records) < 2:
        raise ValueError(f"fraction {fraction} of {len(data.train)} training samples leaves {len(records)} "
                         f"for seed {seed}; need at least 2 (use a larger fraction or dataset)")
    return records


def resolve_arch(cfg: FinetuneConfig) -> None:
    """`arch: auto` made concrete before hashing: a run's identity names the real architecture."""
    if cfg.arch == "auto":
        import torch
        cfg.arch = "resnet50" if torch.cuda.is_available() else "resnet18"


def run_key(cfg: FinetuneConfig, data: TaskData, run: Run, digests: dict) -> str:
    """The name of a run's result file: the hash of its identity (`digests` caches checkpoints')."""
    return stable_hash(run_identity(cfg, data, run, _init_identity(run.init, cfg.arch, digests)))


def run_one(cfg: FinetuneConfig, task, data: TaskData, run: Run, init_id: dict, out: Path, device=None,
            baseline: dict | None = None) -> dict:
    """Search (cached), train, optionally self-distil, evaluate on the test split; the result dict."""
    t0 = time.time()
    ident = run_identity(cfg, data, run, init_id)
    key = stable_hash(ident)
    records = training_records(cfg, data, run.fraction, run.seed)
    # the search is per (task, dataset, init, fraction): it uses the split_seed subset for every seed
    search_records = training_records(cfg, data, run.fraction, cfg.split_seed)
    search_key = dict(ident, seed=None)
    hp, trials, split_sizes = search(cfg, task, search_records, run.init, search_key, out, device=device)
    model = trainer.build_model(task, run.init, cfg.arch, cfg.adapt, seed=run.seed)
    ckpt_dir = out / "runs" / key
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    losses = trainer.train(model, task, records, hp, cfg.train, seed=run.seed, device=device,
                           ckpt=ckpt_dir / "last.pt", progress=True)
    history = []
    pool_size = 0
    if cfg.distill:
        pool = distill_mod.unlabelled_pool(cfg, data.train)
        pool_size = len(pool)
        model, history = distill_mod.self_distill(cfg, task, model, records, pool, run.init, hp, run.seed, device)
    metrics = trainer.evaluate(model, task, data.test, cfg.train, pairs=data.pairs, device=device,
                               reference=records)
    headline = metrics.get(task.primary)
    if not isinstance(headline, (int, float)) or not math.isfinite(headline):
        # a diverged run (NaN loss) is a failed run, never a finished one with nme=nan
        raise FloatingPointError(f"{task.primary} is {headline!r} (final training loss {losses[-1]!r}); "
                                 f"the run is not recorded")
    result = {
        "key": key, "task": cfg.task, "dataset": cfg.data, "init": run.init, "fraction": run.fraction,
        "seed": run.seed, "adapt": cfg.adapt, "distill": cfg.distill,
        "primary_metric": task.primary, "lower_is_better": task.lower_is_better,
        "metrics": metrics, "hparams": hp.as_dict(),
        # landmarks: which normalisation `nme` is under (metrics hold numbers only)
        **({"nme_norm": task.nme_norm()} if cfg.task == "landmarks" else {}),
        "search": {"trials": trials, "budget": cfg.trials},
        # landmarks: the mean-shape predictor's metrics on the same test set (baseline.py)
        **({"baseline": {"mean_shape": baseline}} if baseline else {}),
        "sizes": {"train_pool": len(data.train), "train": len(records), "search_fit": split_sizes["fit"],
                  "search_val": split_sizes["val"], "test": len(data.test),
                  "test_pairs": len(data.pairs) if data.pairs else None, "unlabelled": pool_size},
        "train_loss": {"first": losses[0], "final": losses[-1]}, "distill_rounds": history,
        "info": {k: v for k, v in data.info.items()}, "identity": ident,
        "seconds": round(time.time() - t0, 2), "device": str(device or trainer.pick_device(cfg.train.device)),
    }
    atomic_write_json(out / "results" / f"{key}.json", result)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return result


def run_grid(cfg: FinetuneConfig, rank: int | None = None, world: int | None = None) -> dict:
    """Run (or resume) the grid; returns counts {done, skipped, failed, total}."""
    cfg.check()
    resolve_arch(cfg)
    here = env_rank()
    rank = here.rank if rank is None else rank
    world = here.world_size if world is None else world
    out = Path(cfg.out)
    (out / "results").mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out / "results")
    task, data = load_task(cfg)
    log.info("%s: %d training / %d test samples%s", cfg.task, len(data.train), len(data.test),
             f", {len(data.pairs)} verification pairs" if data.pairs else "")
    device = trainer.pick_device(cfg.train.device)
    if cfg.train.threads and device.type == "cpu":
        import torch
        torch.set_num_threads(cfg.train.threads)
    digests: dict = {}
    runs = rank_runs(plan(cfg), rank, world, by_data_point=cfg.trials > 1)
    # every run named (its key list read, its init hashed) before any training: a missing one exits 2 now
    keys = {run: run_key(cfg, data, run, digests) for run in runs}
    baseline = None
    if cfg.task == "landmarks" and runs:
        from facesift.finetune.baseline import cached_mean_shape
        try:
            baseline = cached_mean_shape(task, data.train, data.test, out)
        except (OSError, ValueError) as exc:   # a bad image is the runs' error to report, not the baseline's
            log.warning("mean-shape baseline not computed: %s", exc)
    counts = {"done": 0, "skipped": 0, "failed": 0, "total": len(runs)}
    for run in progress(runs, desc=f"finetune[{rank}]" if world > 1 else "finetune", unit="run"):
        if (out / "results" / f"{keys[run]}.json").exists():
            counts["skipped"] += 1
            continue
        try:
            res = run_one(cfg, task, data, run, _init_identity(run.init, cfg.arch, digests), out, device,
                          baseline=baseline)
        except NotACheckpoint:  # a bad --inits file fails every run of it: the command's error (exit 2)
            raise
        except (FloatingPointError, RuntimeError, ValueError, OSError) as exc:
            log.error("run %s fraction %g seed %d failed: %s", run.init, run.fraction, run.seed, exc)
            counts["failed"] += 1
            continue
        counts["done"] += 1
        log.info("%s @ %g seed %d: %s=%.4g (%.0fs)", run.init, run.fraction, run.seed, task.primary,
                 res["metrics"][task.primary], res["seconds"])
    return counts
