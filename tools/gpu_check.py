"""GPU check for `facesift pretrain`: throughput, peak memory and data-wait on one CUDA device.

1. `--synthetic-steps` (100) steps of the gpu-r50 preset (ResNet-50, 2×224 + 6×96, K 3000,
   per-GPU batch 64, bf16 autocast, channels_last, LARS) on random tensors already on the GPU:
   the model's ceiling.
   `--profile-steps N` profiles N more of them and prints torch.profiler's op table and the
   convolutions' share of device time; `--set compile=true` times the compiled trunk.
2. `--real-steps` (300) steps of the real trainer (`pretrain.train.train`) streaming from shards
   (`--shards`, or 256×256 JPEG shards made from ../shared/data/landmarks5), reporting the
   trainer's own images/s and data-wait fraction from its metrics.csv.

    .venv/bin/python tools/gpu_check.py                          # on a CUDA machine
    .venv/bin/python tools/gpu_check.py --device cpu --tiny      # CPU smoke test (cpu-tiny preset)
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()

import torch  # noqa: E402

from facesift.pretrain.config import PretrainConfig  # noqa: E402
from facesift.pretrain.train import bf16_native  # noqa: E402
from facesift.common.config import resolve  # noqa: E402


def make_shards(out: Path, n: int, size: int) -> Path:
    import webdataset as wds
    from PIL import Image
    src = ROOT.parent / "shared" / "data" / "landmarks5"
    if not src.exists():
        src = ROOT / "data" / "sample" / "landmarks5" / "images"
    files = sorted(src.rglob("*.jpg"))[:n]
    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / "faces-%06d.tar"), maxcount=max(1, len(files) // 8), verbose=0) as w:
        for i, f in enumerate(files):
            buf = io.BytesIO()
            Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC).save(buf, "JPEG", quality=95)
            w.write({"__key__": f"img{i:06d}_0", "jpg": buf.getvalue()})
    return out


def synthetic(cfg: PretrainConfig, steps: int, device: torch.device, profile_steps: int = 0) -> dict:
    """The model's ceiling: SwAV steps on random crops already on the device. With `profile_steps`,
    that many more steps run under torch.profiler and the result carries its op table (`profile`)
    and the share of device time spent in convolutions (`conv_share`: what the rest can at most
    give back)."""
    from facesift.pretrain.multicrop import crop_plan
    from facesift.pretrain.optim import LARS, param_groups
    from facesift.pretrain.swav import SwAVModel, drop_prototype_grads, normalize_prototypes, swav_loss
    cuda = device.type == "cuda"
    model = SwAVModel(cfg.model.arch, cfg.model.hidden_mlp, cfg.model.feat_dim, cfg.model.nmb_prototypes)
    model = model.to(device, memory_format=torch.channels_last)
    if cfg.compile:   # as the trainer does it: the trunk
        model.backbone = torch.compile(model.backbone)
    opt = LARS(param_groups(model, cfg.optim.weight_decay, cfg.optim.exclude_bn_bias), lr=0.1)
    bs = cfg.data.batch_size
    plan = crop_plan(cfg.crops)
    crops = [torch.randn(bs, 3, s, s, device=device).contiguous(memory_format=torch.channels_last) for s, _, _ in plan]
    warm = min(10, max(1, steps // 5)) + (10 if cfg.compile else 0)   # compiling takes the first calls
    amp = cfg.amp and bf16_native(device)

    def step(i: int) -> torch.Tensor:
        normalize_prototypes(model)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z, scores = model(crops)
        loss, _, _ = swav_loss(z, scores, bs, len(plan), model.prototypes.weight, tuple(cfg.swav.crops_for_assign))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if i < 5:
            drop_prototype_grads(model)
        opt.step()
        if cuda:
            torch.cuda.synchronize(device)
        return loss

    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + warm):
        t = time.perf_counter()
        loss = step(i)
        if i >= warm:
            times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    out = {"images_per_s": bs / statistics.median(times), "step_ms": 1000 * statistics.median(times),
           "peak_gib": peak, "loss": float(loss.detach())}
    if profile_steps:
        out.update(profile(step, profile_steps, cuda))
    return out


def profile(step, steps: int, cuda: bool) -> dict:
    """torch.profiler over `steps` steps: the top ops by self device time, and the convolutions' share."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for i in range(steps):
            step(100 + i)
    events = prof.key_averages()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    conv = sum(getattr(e, attr) for e in events if "conv" in e.key.lower() or "cudnn" in e.key.lower())
    try:
        table = events.table(sort_by=attr, row_limit=25)
    except (AttributeError, KeyError, ValueError):   # older torch names the column self_cuda_time_total
        table = events.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=25)
    return {"profile": table, "conv_share": conv / total}


def real(cfg: PretrainConfig, steps: int, shards: str, out: Path, device: torch.device) -> dict:
    from facesift.pretrain.train import train
    cfg.shards, cfg.out, cfg.max_steps, cfg.log_every, cfg.checkpoint_every = shards, str(out), steps, 10, 10**9
    cfg.data.epoch_size = max(cfg.data.epoch_size, steps * cfg.data.batch_size)
    cfg.optim.epochs = max(1, cfg.optim.epochs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    rows = rows[1:] or rows  # the first window includes worker start-up
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"images_per_s": statistics.median(float(r["images_per_s"]) for r in rows),
            "data_wait": statistics.median(float(r["data_wait"]) for r in rows),
            "peak_gib": peak, "wall_s": wall, "loss": result["loss"], "bad": result["bad_samples"]}


def _gib(value: float) -> str:
    return "n/a (CPU)" if value != value else f"{value:.2f} GiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="cpu-tiny preset and a few steps (smoke test)")
    ap.add_argument("--config", default=None, help="preset (default configs/gpu-r50.yaml, or cpu-tiny with --tiny)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--shards", default=None, help="real shards (default: made from landmarks5 at 256x256)")
    ap.add_argument("--synthetic-steps", type=int, default=None)
    ap.add_argument("--real-steps", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--profile-steps", type=int, default=0,
                    help="after the synthetic timing, profile this many steps (torch.profiler) and print the op table")
    ap.add_argument("--skip-real", action="store_true", help="the synthetic steps only")
    args = ap.parse_args(argv)
    if args.profile_steps < 0:
        print(f"--profile-steps must be >= 0, got {args.profile_steps}")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: run on a GPU machine, or --device cpu --tiny for a smoke test")
        return 2
    preset = args.config or str(ROOT / "configs" / ("cpu-tiny.yaml" if args.tiny else "gpu-r50.yaml"))
    cfg = resolve(PretrainConfig, preset, args.overrides, section="pretrain")
    cfg.device = device.type
    if args.workers is not None:
        cfg.data.workers = args.workers
    syn_steps = args.synthetic_steps or (3 if args.tiny else 100)
    real_steps = args.real_steps or (4 if args.tiny else 300)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, preset {Path(preset).name}: {cfg.model.arch}, "
          f"crops {cfg.crops.nmb_crops}x{cfg.crops.size_crops}, batch {cfg.data.batch_size}, "
          f"K {cfg.model.nmb_prototypes}, bf16 {cfg.amp and bf16_native(device)}, workers {cfg.data.workers}")
    s = synthetic(cfg, syn_steps, device, args.profile_steps)
    print(f"[synthetic] {syn_steps} steps: {s['images_per_s']:.1f} img/s, {s['step_ms']:.1f} ms/step, "
          f"peak memory {_gib(s['peak_gib'])}, loss {s['loss']:.3f}, compile {cfg.compile}")
    if args.profile_steps:
        print(f"[profile] {args.profile_steps} steps; convolutions {s['conv_share']:.1%} of "
              f"{'device' if device.type == 'cuda' else 'CPU'} time (the rest is what other work can give back)")
        print(s["profile"])
    if args.skip_real:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or str(make_shards(Path(tmp) / "shards", 400 if args.tiny else 4000, 256))
        r = real(cfg, real_steps, shards, Path(tmp) / "ckpt", device)
    print(f"[shards] {real_steps} steps: {r['images_per_s']:.1f} img/s, data-wait {r['data_wait']:.1%}, "
          f"peak memory {_gib(r['peak_gib'])}, loss {r['loss']}, bad samples {r['bad']}, wall {r['wall_s']:.0f} s")
    print(f"[ratio] shards / synthetic throughput {r['images_per_s'] / s['images_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
