"""`facesift pretrain --nproc G`: the same training as G processes on this machine, via torchrun.

The command re-runs itself as `python -m torch.distributed.run --nproc_per_node=G -m
facesift.pretrain.train ...` with the same options, and waits. While it waits, a scheduler's
SIGTERM/SIGUSR1 is passed on to torchrun (which tells every worker, so all of them checkpoint
at the same step); Ctrl-C already reaches the whole process group from the terminal.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from facesift.common.stopping import install_forwarding

log = logging.getLogger("facesift.pretrain")


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The options of `python -m facesift.pretrain.train` that repeat this command's."""
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


def run(args: argparse.Namespace, nproc: int = 1) -> int:
    """Train in this process, or with `nproc` > 1 launch torchrun and return its exit status.
    Already under torchrun (WORLD_SIZE set, whatever its value) this process is one of the
    workers: it trains rather than launching workers of its own."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        return launch(args, nproc)
    from facesift.pretrain.train import run_from_args
    return run_from_args(args)


def launch(args: argparse.Namespace, nproc: int) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "facesift.pretrain.train", *worker_argv(args)]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    child = subprocess.Popen(cmd)
    restore = install_forwarding(child.pid)  # a scheduler's SIGTERM reaches torchrun, which tells the workers
    try:
        return child.wait()
    finally:
        restore()
