"""`facesift finetune`: fine-tune on a face task at several label fractions, inits and seeds."""
from __future__ import annotations

import argparse
import logging

from facesift.common.config import add_config_args

log = logging.getLogger("facesift.finetune")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune on a face task at 100/10/2%% of the labels (the grid)",
                       description="Run (or resume) the grid inits x fractions x seeds for one task and "
                                   "dataset; writes <out>/results/<hash>.json per run. Under torchrun, "
                                   "ranks split the runs (one GPU each). Read the results with `facesift curve`.")
    p.add_argument("--task", choices=["landmarks", "classification", "regression", "recognition"])
    p.add_argument("--data", help="landmarks: landmarks5 dir / '<img> x.. y..' list / folder of .pts; "
                                  "classification/recognition: manifest CSV/JSON (path,label) or a yalefaces "
                                  "folder; regression: CSV path,<target>...")
    p.add_argument("--test", help="separate labelled test set (default: carve --set test_fraction by hash)")
    p.add_argument("--pairs", help="recognition: verification pairs '<img1> <img2> <0|1>' for the test")
    p.add_argument("--inits", type=_csv, help="comma list: scratch, a SwAV backbone.pt, torchvision checkpoints")
    p.add_argument("--arch", help="architecture for 'scratch' (default auto: resnet50 on CUDA, resnet18 on CPU)")
    p.add_argument("--fractions", type=lambda s: [float(x) for x in _csv(s)], help="e.g. 1,0.1,0.02")
    p.add_argument("--fraction-keys", dest="fraction_keys", type=_csv,
                   help="FRACTION=KEYLIST,...: take a fraction from a `shards split` key list "
                        "('{seed}' in KEYLIST: one list per seed)")
    p.add_argument("--seeds", type=int, help="seeds per (init, fraction) (default 3)")
    p.add_argument("--trials", type=int, help="hyper-parameter search budget per data point (default 1: no search)")
    p.add_argument("--adapt", choices=["full", "linear"], help="full fine-tune or linear probe")
    p.add_argument("--distill", type=int, help="self-distillation rounds T (needs --unlabelled)")
    p.add_argument("--unlabelled", help="image folder or list for self-distillation, or 'pool'")
    p.add_argument("--image-size", dest="image_size", type=int, help="input side in pixels (default 128)")
    p.add_argument("--label", choices=["identity", "expression"], help="label of a yalefaces folder")
    p.add_argument("--out", help="output folder (default work/finetune)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesift.finetune.config import FinetuneConfig
    from facesift.finetune.grid import run_grid
    from facesift.common.config import resolve, save_config
    from facesift.common.logsetup import summary
    from pathlib import Path

    fields = {k: getattr(args, k) for k in ("task", "data", "test", "pairs", "inits", "arch", "fractions",
                                            "fraction_keys", "seeds", "trials", "adapt", "distill",
                                            "unlabelled", "image_size", "label", "out")}
    try:
        cfg = resolve(FinetuneConfig, args.config, args.overrides, section="finetune", **fields)
        cfg.check()
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    from facesift.common.lock import LockHeld, output_lock, rank_lock_name
    from facesift.common.stopping import GracefulStop, StopRequested, stop_code
    try:
        with output_lock(cfg.out, rank_lock_name()), GracefulStop():
            save_config(cfg, Path(cfg.out) / "config.yaml")
            counts = run_grid(cfg)
    except (ValueError, FileNotFoundError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2
    except StopRequested as stop:
        log.warning("%s: the current run is checkpointed; the same command continues the grid", stop)
        return stop_code(stop.signal_name)
    summary("finetune", **counts, results=str(Path(cfg.out) / "results"))
    return 1 if counts["failed"] else 0
