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
import fnmatch
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()

import numpy as np  # noqa: E402

from facesift.common.atomic import atomic_write_json  # noqa: E402
from facesift.common.config import resolve  # noqa: E402
from facesift.common.logsetup import setup_logging  # noqa: E402
from facesift.finetune.config import FinetuneConfig, stable_hash  # noqa: E402
from facesift.finetune.baseline import cached_mean_shape  # noqa: E402
from facesift.finetune.datasets import read_landmarks  # noqa: E402
from facesift.finetune.tasks import load_task  # noqa: E402

log = logging.getLogger("bench_fewshot")
PRETRAIN_CONFIG = ROOT / "configs" / "cpu-fewshot.yaml"
FINETUNE_CONFIG = ROOT / "configs" / "finetune-fewshot.yaml"
DEFAULT_EXCLUDE = ["net_7876/_*"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of the seeds' values (a point when there is one seed)."""
    v = np.asarray(values, np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = T975.get(len(v) - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def training_lists(data: Path, test: str | None, source: str, exclude: list[str], work: Path
                   ) -> tuple[Path, Path, int]:
    """(training list, held-out list, faces excluded): `--data` minus the `--exclude` patterns,
    and without `--test` also minus the held-out `source` folder, which becomes the test list."""
    records = read_landmarks(data)
    root = data if data.is_dir() else data.parent

    def rel(r: dict) -> str:
        p = Path(r["path"])
        return str(p.relative_to(root)) if p.is_relative_to(root) else p.name
    kept = [r for r in records if not any(fnmatch.fnmatch(rel(r), pat) for pat in exclude)]
    dropped = len(records) - len(kept)
    if test is None:
        train = [r for r in kept if Path(r["path"]).parent.name != source]
        held = [r for r in records if Path(r["path"]).parent.name == source
                and not any(fnmatch.fnmatch(rel(r), pat) for pat in exclude)]
        if not train or not held:
            raise SystemExit(f"--holdout {source}: {len(train)} training and {len(held)} held-out faces in {data}")
        paths = [work / f"train-without-{source}.txt", work / f"test-{source}.txt"]
        sets = [train, held]
    else:
        paths, sets = [work / "train.txt"], [kept]
    for path, recs in zip(paths, sets):
        lines = [" ".join([r["path"], *(f"{v:.3f}" for v in r["target"][:, 0]), *(f"{v:.3f}" for v in r["target"][:, 1])])
                 for r in recs]
        text = "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return paths[0], (paths[1] if test is None else Path(test)), dropped


def write_pool_shards(records: list[dict], out: Path) -> Path:
    """The unlabelled pool as webdataset shards (jpg + provenance, no labels), for `facesift pretrain`."""
    from facesift.shards.writer import ShardWriter
    if (out / "index.json").exists():
        return out
    with ShardWriter(out, maxcount=2000, name="fewshot-pool") as writer:
        for r in records:
            writer.write_group([{"__key__": r["key"], "jpg": Path(r["path"]).read_bytes(),
                                 "json": {"source": "bench_fewshot", "path": r["path"]}}])
    return out


def pretrain(shards: Path, out: Path, config: Path, overrides: list[str], threads: int) -> tuple[Path, float]:
    """SwAV with the recipe; (backbone, seconds spent pretraining over every session)."""
    backbone, timing = out / "backbone.pt", out / "bench-seconds.json"
    spent = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    if backbone.exists():   # written when the schedule ends
        log.info("pretrained backbone exists: %s", backbone)
        return backbone, spent
    cmd = [str(ROOT / ".venv" / "bin" / "facesift"), "pretrain", "--shards", str(shards), "--out", str(out),
           "--config", str(config)]
    for o in overrides:
        cmd += ["--set", o]
    if (out / "last.pt").exists():
        cmd.append("--resume")
    out.mkdir(parents=True, exist_ok=True)
    log.info("pretraining: %s (log: %s)", " ".join(cmd), out / "pretrain.log")
    t0 = time.time()
    with open(out / "pretrain.log", "a") as fh:   # collapse_report counts the watch's warnings in it
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), cwd=ROOT,
                       stdout=fh, stderr=subprocess.STDOUT)
    spent += time.time() - t0
    atomic_write_json(timing, {"seconds": spent})
    if not backbone.exists():
        raise SystemExit(f"pretraining finished without {backbone}")
    return backbone, spent


def finetune(cfg: FinetuneConfig, out: Path, ranks: int, threads: int, name: str = "recipe.yaml") -> list[int]:
    """`facesift finetune --config <recipe>` on `ranks` processes that split the grid by data point
    (each point's search and seeds on one rank), `threads // ranks` torch threads each: on 2 cores
    two single-threaded runs side by side do ~1.4x the work of one run on 2 threads."""
    from facesift.common.config import save_config
    recipe = save_config(cfg, out / name)
    cmd = [str(ROOT / ".venv" / "bin" / "facesift"), "finetune", "--config", str(recipe)]
    each = max(1, threads // ranks)
    env = dict(os.environ, WORLD_SIZE=str(ranks), OMP_NUM_THREADS=str(each))
    procs = [subprocess.Popen(cmd + ["--set", f"train.threads={each}"],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), cwd=ROOT) for r in range(ranks)]
    try:
        return [p.wait() for p in procs]
    finally:   # interrupted (Ctrl-C, SIGTERM): ranks left running would hold the cores for hours
        stop_all(procs)


def stop_all(procs: list[subprocess.Popen], grace_s: float = 60.0) -> None:
    """SIGTERM what still runs (each rank checkpoints its run and exits), SIGKILL after `grace_s`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def exit_on_sigterm() -> None:
    """SIGTERM (`kill`, a scheduler) unwinds like Ctrl-C, so the `finally` above stops the ranks."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def collapse_report(ckpt: Path) -> str:
    """One line on the collapse monitor: last loss, code entropy against ln K, prototypes in use."""
    csv = ckpt / "metrics.csv"
    if not csv.exists():
        return "no metrics.csv"
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    head, last = rows[0], rows[-1]
    get = dict(zip(head, last))
    logfile = ckpt / "pretrain.log"
    warnings = (sum(1 for line in logfile.read_text().splitlines() if "COLLAPSE?" in line)   # CollapseWatch's warnings
                if logfile.exists() else "no pretrain.log")
    return (f"step {get.get('step')}: loss {get.get('loss')}, code entropy {get.get('entropy')}, "
            f"prototypes used {get.get('prototypes_used')}, largest share {get.get('max_share')}, "
            f"collapse warnings in log: {warnings}")


def collect(results: Path, inits: dict[str, str]) -> list[dict]:
    """Rows {init, fraction, nme_mean, nme_ci, seeds} from the grid's result files."""
    cells: dict[tuple[str, float], list[float]] = {}
    for path in sorted(results.glob("*.json")):
        r = json.loads(path.read_text())
        name = inits.get(r["init"])
        if name is None:
            continue
        cells.setdefault((name, float(r["fraction"])), []).append(float(r["metrics"]["nme"]))
    rows = []
    for (name, frac), values in sorted(cells.items(), key=lambda kv: (kv[0][0] != "scratch", -kv[0][1])):
        m, lo, hi = t_interval(values)
        rows.append({"init": name, "fraction": frac, "nme_mean": round(m, 3), "nme_ci": [round(lo, 3), round(hi, 3)],
                     "seeds": len(values)})
    return rows


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
    codes = finetune(cfg, ft_out, args.ranks, args.threads)
    if args.seeds_smallest > args.seeds and not any(codes):
        # the same grid again at the smallest fraction only: its searches and first seeds are on disk
        # (a run's identity holds neither the seed count nor the fraction list), the new seeds run
        extra = copy.deepcopy(cfg)
        extra.fractions, extra.seeds = [min(cfg.fractions)], args.seeds_smallest
        codes = finetune(extra, ft_out, args.ranks, args.threads, name="recipe-smallest.yaml")
    finetune_s += time.time() - t1
    atomic_write_json(timing, {"seconds": finetune_s})
    counts = {"ranks": args.ranks, "exit_codes": codes}
    if any(codes):
        log.error("fine-tuning exited %s", codes)

    rows = collect(ft_out / "results", {"scratch": "scratch", str(backbone): "swav"})
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
