"""`facesift pretrain`: SwAV on face shards (one process, or `--nproc G` processes via torchrun)."""
from __future__ import annotations

import argparse


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


def run(args: argparse.Namespace) -> int:
    from facesift.pretrain.launch import run as run_pretrain
    return run_pretrain(args, args.nproc)
