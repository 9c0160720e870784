"""The paper's few-shot claim (Table 5) on faces cropped another way, as one experiment.

1. The training pool (`--data`, labels dropped) becomes webdataset shards, and SwAV pretrains a
   resnet18 on it with the documented CPU recipe (`configs/cpu-fewshot.yaml`: the paper's
   photometric augmentations, batch 128, AdamW). The test faces never enter pretraining.
2. 5-point landmarks are fine-tuned at 100/10/2 % of the labels from scratch and from that
   backbone with the documented fine-tuning recipe (`configs/finetune-fewshot.yaml`: strong
   geometric augmentation, a schedule that scales with the labelled images, a 3-trial search
   scored on a validation split carved from the training fraction, one test-time re-crop at
   twice the training faces' size: finetune/recrop.py), `--seeds` seeds each.
3. Scored on the held-out list `--test` (`<img> x1..x5 y1..y5`, paths relative to the list).
   Without `--test`, the held-out faces are the `--holdout` source folder of `--data` (default
   net_7876: train on lfw_5590, test on the web crops, which frame the face differently: eyes
   higher and farther apart) and the training pool is the rest. `--exclude` (default
   `net_7876/_*`) leaves out landmarks5's crops whose labels sit above the face, on both sides
   (docs/finetune.md, "A label defect").

Prints a table (NME mean and 95 % t-interval over seeds, SwAV/scratch ratio, the mean-shape
baseline) and writes `--json`:
{"rows": [{"init", "fraction", "nme_mean", "nme_ci", "seeds"}], "pretrain_s", "finetune_s", ...}.
Resumable: re-running skips the finished pretraining, search trials and runs (all under --work).

    .venv/bin/python tools/bench_fewshot.py --json fewshot.json                 # the cross-crop check
    .venv/bin/python tools/bench_fewshot.py --test held_out.txt --work .bench/fewshot-other
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()

from facesift.common.atomic import atomic_write_json  # noqa: E402
from facesift.common.config import resolve  # noqa: E402
from facesift.common.logsetup import setup_logging  # noqa: E402
from facesift.experiment import (DEFAULT_EXCLUDE, collapse_report, collect, exit_on_sigterm, finetune, grid_keys, pretrain,  # noqa: E402
                                 stop_all, t_interval, training_lists, write_pool_shards)  # noqa: F401 (tests)
from facesift.finetune.config import FinetuneConfig, stable_hash  # noqa: E402
from facesift.finetune.baseline import cached_mean_shape  # noqa: E402
from facesift.finetune.tasks import load_task  # noqa: E402

log = logging.getLogger("bench_fewshot")
PRETRAIN_CONFIG = ROOT / "configs" / "cpu-fewshot.yaml"
FINETUNE_CONFIG = ROOT / "configs" / "finetune-fewshot.yaml"


def format_rows(rows: list[dict], mean_shape: float) -> str:
    by = {(r["init"], r["fraction"]): r for r in rows}
    fracs = sorted({r["fraction"] for r in rows}, reverse=True)
    lines = [f"{'fraction':>9} | {'scratch NME % [95% CI]':>24} | {'SwAV NME % [95% CI]':>24} | {'SwAV/scratch':>12} | "
             f"{'intervals':>9} | {'beats mean shape':>16}"]
    for f in fracs:
        s, w = by.get(("scratch", f)), by.get(("swav", f))

        def cell(r):
            return f"{r['nme_mean']:6.2f} [{r['nme_ci'][0]:.2f}, {r['nme_ci'][1]:.2f}] n={r['seeds']}" if r else "-"
        ratio = f"{w['nme_mean'] / s['nme_mean']:.3f}" if s and w else "-"
        apart = ("apart" if w["nme_ci"][1] < s["nme_ci"][0] or s["nme_ci"][1] < w["nme_ci"][0] else "overlap") \
            if s and w else "-"
        beats = "/".join(("yes" if r["nme_mean"] < mean_shape else "NO") if r else "-" for r in (s, w))
        lines.append(f"{100 * f:>8g}% | {cell(s):>24} | {cell(w):>24} | {ratio:>12} | {apart:>9} | {beats:>16}")
    lines.append(f"mean shape of the training pool: {mean_shape:.2f} % NME")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "landmarks5"),
                    help="labelled training pool: landmarks5 dir or '<img> x1..x5 y1..y5' list")
    ap.add_argument("--test", help="held-out list '<img> x1..x5 y1..y5' (paths relative to the list); "
                                   "default: the --holdout source folder of --data")
    ap.add_argument("--holdout", default="net_7876", help="without --test: the source folder held out")
    ap.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                    help="leave out training faces whose path (relative to --data) matches; default "
                         f"{DEFAULT_EXCLUDE} (landmarks5's files whose labels sit above the face, see "
                         "docs/finetune.md); --exclude '' keeps everything")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seeds-smallest", type=int, default=6, metavar="N",
                    help="seeds at the smallest fraction (default 6; <= --seeds: no extra): its interval is "
                         "the widest (each seed draws other faces) and its runs cost the least")
    ap.add_argument("--work", default=str(ROOT / ".bench" / "fewshot"))
    ap.add_argument("--json", help="write the rows and timings here")
    ap.add_argument("--backbone", help="use this SwAV backbone instead of pretraining one")
    ap.add_argument("--pretrain-config", default=str(PRETRAIN_CONFIG))
    ap.add_argument("--finetune-config", default=str(FINETUNE_CONFIG))
    ap.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the pretraining recipe (repeatable)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="override the fine-tuning recipe (repeatable), e.g. fractions=[1,0.1]")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in all (default: this machine's 2 cores)")
    ap.add_argument("--ranks", type=int, default=2, help="fine-tuning processes sharing --threads (default 2)")
    args = ap.parse_args()
    setup_logging(0)
    exit_on_sigterm()
    if args.seeds < 1 or args.ranks < 1 or args.threads < 1 or args.seeds_smallest < 0:
        print("bench_fewshot: --seeds, --ranks and --threads must be >= 1, --seeds-smallest >= 0", file=sys.stderr)
        return 2
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exclude = [e for e in (DEFAULT_EXCLUDE if args.exclude is None else args.exclude) if e]
    data, test, dropped = training_lists(Path(args.data), args.test, args.holdout, exclude, work)
    if dropped:
        log.info("left out %d training faces matching %s", dropped, exclude)
    try:
        cfg = resolve(FinetuneConfig, args.finetune_config, args.overrides, section="finetune",
                      task="landmarks", data=str(data), test=str(test), seeds=args.seeds)
        cfg.check()
        task, split = load_task(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench_fewshot: {exc}", file=sys.stderr)
        return 2
    # one folder per recipe and data, so a table never mixes settings
    ident = {"data": str(data), "test": str(test), "recipe": stable_hash({k: v for k, v in vars(cfg).items()
                                                                        if k not in ("out", "seeds", "inits", "train")})}
    ft_out = work / f"finetune-{stable_hash(ident, 10)}"
    cfg.out = str(ft_out)
    log.info("training pool %d faces, held-out %d faces; fine-tuning results in %s", len(split.train), len(split.test), ft_out)

    t0 = time.time()
    if args.backbone:
        backbone, pretrain_s = Path(args.backbone), 0.0
    else:
        pool = work / f"pool-{stable_hash(str(data), 10)}"
        shards = write_pool_shards(split.train, pool / "shards")
        backbone, pretrain_s = pretrain(shards, pool / "ckpt", Path(args.pretrain_config), args.pretrain_set,
                                        args.threads)
        print("SwAV collapse monitor:", collapse_report(pool / "ckpt"))
    cfg.inits = ["scratch", str(backbone)]
    timing = ft_out / "bench-seconds.json"
    finetune_s = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    t1 = time.time()
    grids = [cfg]
    try:   # an interrupted session's time counts too: the next session resumes its grid
        codes = finetune(cfg, ft_out, args.ranks, args.threads)
        if args.seeds_smallest > args.seeds and not any(codes):
            # the same grid again at the smallest fraction only: its searches and first seeds are on disk
            # (a run's identity holds neither the seed count nor the fraction list), the new seeds run
            extra = copy.deepcopy(cfg)
            extra.fractions, extra.seeds = [min(cfg.fractions)], args.seeds_smallest
            grids.append(extra)
            codes = finetune(extra, ft_out, args.ranks, args.threads, name="recipe-smallest.yaml")
    finally:
        finetune_s += time.time() - t1
        atomic_write_json(timing, {"seconds": finetune_s})
    counts = {"ranks": args.ranks, "exit_codes": codes}
    if any(codes):
        log.error("fine-tuning exited %s", codes)

    rows = collect(ft_out / "results", {"scratch": "scratch", str(backbone): "swav"}, keys=grid_keys(*grids))
    baseline = cached_mean_shape(task, split.train, split.test, ft_out)[task.primary]
    print()
    print(f"few-shot landmarks, held-out faces: {len(split.train)} training / {len(split.test)} test ({test}); "
          f"resnet18 {cfg.image_size}px, trials={cfg.trials}, seeds={args.seeds} "
          f"({max(args.seeds, args.seeds_smallest)} at {100 * min(cfg.fractions):g} %), test flip={cfg.test_flip}, re-crops={cfg.recrop.passes} "
          f"at zoom {cfg.recrop.zoom:g}; NME {task.nme_norm()} %")
    print(format_rows(rows, baseline))
    print(f"pretrain {pretrain_s:.0f} s, fine-tune {finetune_s:.0f} s (over every session of this work folder), "
          f"this session {time.time() - t0:.0f} s; grid {json.dumps(counts)}")
    if args.json:
        atomic_write_json(Path(args.json), {
            "rows": rows, "pretrain_s": round(pretrain_s, 1), "finetune_s": round(finetune_s, 1),
            "mean_shape_nme": round(baseline, 3), "nme_norm": task.nme_norm(), "train": len(split.train),
            "test": len(split.test), "test_list": str(test), "excluded": dropped, "exclude": exclude, "data": str(data), "backbone": str(backbone),
            "image_size": cfg.image_size, "trials": cfg.trials, "grid": counts,
            "recrop": {"passes": cfg.recrop.passes, "zoom": cfg.recrop.zoom}, "test_flip": cfg.test_flip,
            "seeds": args.seeds, "seeds_smallest": max(args.seeds, args.seeds_smallest)})
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
