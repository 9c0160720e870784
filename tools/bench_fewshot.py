"""The paper's few-shot claim at small scale: SwAV pretraining helps most when labels are few.

1. Pretrain a `cpu-tiny` SwAV resnet18 on the landmarks5 crops of the training pool, without
   their labels (the fine-tuning test split is kept out of pretraining too), via
   `facesift pretrain --config configs/cpu-tiny.yaml`.
2. Fine-tune 5-point landmarks at 100/10/2% of the labels from scratch and from that backbone
   (`facesift finetune`'s grid), same hyper-parameters for both.
3. Print the NME table, the SwAV/scratch NME ratio per fraction and the redundancy index
   (`facesift curve`). Expected direction (paper Table 5): SwAV < scratch, most at 2%.

Everything lives under `.bench/fewshot/` and is resumable (re-running skips finished runs;
each fine-tuning setting gets its own results folder). Scale with --pretrain-steps, --steps,
--image-size, --fractions, --seeds. Measured on the shared 2-core machine (load ~10):
200 SwAV steps ≈ 10 min, one 64 px fine-tuning run ≈ 1.3–2 s/step plus ~40 s of evaluation.
At these budgets the models are far from converged (a mean-shape predictor scores ~76% NME on
this test split, because the two sources are cropped differently): give it GPU-sized budgets
(`--steps 3000 --pretrain-steps 5000`) before reading much into the ratios.

    .venv/bin/python tools/bench_fewshot.py --threads 1                  # pretrain + 2 x 3 runs
    .venv/bin/python tools/bench_fewshot.py --backbone .bench/fewshot/ckpt/backbone.pt --steps 300
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()

from facesift.finetune.config import FinetuneConfig  # noqa: E402
from facesift.finetune.curve import format_table, load_results, plot, summarise  # noqa: E402
from facesift.finetune.grid import run_grid  # noqa: E402
from facesift.finetune.tasks import load_task  # noqa: E402
from facesift.common.logsetup import setup_logging  # noqa: E402

log = logging.getLogger("bench_fewshot")


def write_pool_shards(records: list[dict], out: Path) -> Path:
    """The unlabelled pool as webdataset shards (jpg only + provenance), for `facesift pretrain`."""
    from facesift.shards.writer import ShardWriter
    if (out / "index.json").exists():
        return out
    with ShardWriter(out, maxcount=2000, name="landmarks5-pool") as writer:
        for r in records:
            writer.write_group([{"__key__": r["key"], "jpg": Path(r["path"]).read_bytes(),
                                 "json": {"source": "landmarks5", "path": r["path"]}}])
    return out


def pretrain(shards: Path, out: Path, steps: int, threads: int, batch: int = 32) -> Path:
    """cpu-tiny SwAV for `steps` steps: epochs of 50 steps, so warm-up (1 epoch) and the cosine
    decay fit inside a short run instead of being cut off in warm-up."""
    backbone = out / "backbone.pt"
    if backbone.exists():
        log.info("pretrained backbone exists: %s", backbone)
        return backbone
    cmd = [str(ROOT / ".venv" / "bin" / "facesift"), "pretrain", "--shards", str(shards), "--out", str(out),
           "--config", str(ROOT / "configs" / "cpu-tiny.yaml"), "--set", f"data.batch_size={batch}",
           "--set", f"data.epoch_size={50 * batch}", "--set", f"optim.epochs={max(2, -(-steps // 50))}"]
    if (out / "last.pt").exists():
        cmd.append("--resume")
    env = dict(__import__("os").environ, OMP_NUM_THREADS=str(threads))
    log.info("pretraining: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    if not backbone.exists():
        raise SystemExit(f"pretraining finished without {backbone}")
    return backbone


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "landmarks5"))
    ap.add_argument("--work", default=str(ROOT / ".bench" / "fewshot"))
    ap.add_argument("--backbone", help="use this backbone instead of pretraining one")
    ap.add_argument("--pretrain-steps", type=int, default=200, help="SwAV steps (batch 32, cpu-tiny), multiple of 50")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps per run")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--fractions", default="1,0.1,0.02")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a busy machine)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    setup_logging(0)
    work = Path(args.work)
    t0 = time.time()

    # one results folder per fine-tuning setting, so a table never mixes settings
    ft_out = work / f"finetune-{args.image_size}px-{args.steps}steps-lr{args.lr:g}-b{args.batch}"
    cfg = FinetuneConfig(task="landmarks", data=args.data, out=str(ft_out), image_size=args.image_size,
                         fractions=[float(f) for f in args.fractions.split(",")], seeds=args.seeds, trials=1)
    cfg.search.steps, cfg.search.lr, cfg.search.backbone_lr = [args.steps], [args.lr], [1.0]
    cfg.train.batch_size, cfg.train.workers, cfg.train.threads = args.batch, args.workers, args.threads
    cfg.train.ckpt_every = 100
    _, data = load_task(cfg)
    if args.backbone:
        backbone = Path(args.backbone)
    else:
        shards = write_pool_shards(data.train, work / "pool-shards")
        backbone = pretrain(shards, work / "ckpt", args.pretrain_steps, args.threads)
    t_pre = time.time() - t0
    cfg.inits = ["scratch", str(backbone)]
    counts = run_grid(cfg)
    t_ft = time.time() - t0 - t_pre

    blocks = summarise(load_results(ft_out / "results"))
    block = next(b for b in blocks if b["group"]["dataset"] == args.data)
    # keep only this configuration's runs (other settings may share the folder)
    print()
    print(f"few-shot landmarks5: {len(data.train)} training / {len(data.test)} test crops, resnet18 "
          f"{args.image_size}px, {args.steps} steps/run, seeds={args.seeds}; SwAV: {backbone}")
    print(format_table([block]))
    print("NME ratio SwAV / scratch per fraction (< 1: pretraining helps):")
    rows = {(r["init"], r["fraction"]): r["metrics"]["nme"][0] for r in block["rows"]}
    for f in sorted({f for _, f in rows}, reverse=True):
        s, w = rows.get(("scratch", f)), rows.get((str(backbone), f))
        if s and w:
            print(f"  {100 * f:g}%: scratch {s:.2f}  swav {w:.2f}  ratio {w / s:.3f}")
    png = plot([block], ft_out / "curve.png")
    print(f"plot: {png}; grid: {json.dumps(counts)}; pretrain {t_pre:.0f}s, fine-tune {t_ft:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
