"""`facesift pretrain`: SwAV on face shards (one process, or `--nproc G` processes via torchrun)."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

log = logging.getLogger("facesift.pretrain")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="SwAV pretraining of a ResNet on shards (streaming; CPU, GPU or DDP)",
        description="SwAV pretraining from webdataset shards. Writes OUT/last.pt (resume state), "
                    "OUT/backbone.pt (torchvision ResNet state_dict), OUT/metrics.csv, OUT/tb/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from facesift.pretrain.config import add_args
    add_args(p)
    p.add_argument("--nproc", type=int, default=1,
                   help="processes on this machine (one per GPU; gloo on CPU): launches "
                        "`python -m torch.distributed.run --nproc_per_node=N -m facesift.pretrain.train`")
    p.set_defaults(func=run)


def _forwarded(args: argparse.Namespace) -> list[str]:
    argv = []
    if args.shards:
        argv += ["--shards", str(args.shards)]
    if args.out:
        argv += ["--out", str(args.out)]
    if args.config:
        argv += ["--config", str(args.config)]
    for text in args.overrides:
        argv += ["--set", text]
    if args.resume:
        argv.append("--resume")
    if args.restart:
        argv.append("--restart")
    return argv


def run(args: argparse.Namespace) -> int:
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", "-m", "facesift.pretrain.train", *_forwarded(args)]
        log.info("launching %d processes: %s", args.nproc, " ".join(cmd))
        from facesift.common.stopping import install_forwarding
        child = subprocess.Popen(cmd)
        restore = install_forwarding(child.pid)  # a scheduler's SIGTERM reaches torchrun, which tells the workers
        try:
            return child.wait()
        finally:
            restore()
    from facesift.pretrain.train import run_from_args
    return run_from_args(args)
