"""`facesift pretrain --nproc G`: the same training as G processes on this machine, via torchrun.

The command re-runs itself as `python -m torch.distributed.run --nproc_per_node=G -m
facesift.pretrain.train ...` with the same options, and waits. While it waits, a scheduler's
SIGTERM/SIGUSR1 is passed on to torchrun (which tells every worker, so all of them checkpoint
at the same step); Ctrl-C already reaches the whole process group from the terminal.

What would fail in every worker is checked here first, so it is one line and exit 2 rather than
G identical errors and torchrun's failure report: the config, --out, the output lock (held by
this process for the whole job; the workers know from the environment) and an existing
last.pt without --resume/--restart. Rank 0 hands its summary back in a file, so a run that met
damaged shards exits 1 here without its workers failing under torchrun.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
        return launch_checked(args, nproc)
    from facesift.pretrain.train import run_from_args
    return run_from_args(args)


def launch_checked(args: argparse.Namespace, nproc: int) -> int:
    """Check what every worker would refuse, hold OUT's lock, launch; 0, 1 (damaged shards), 2 or
    torchrun's status."""
    from facesift.common.lock import LOCK_NAME, output_lock
    from facesift.pretrain.checkpoint import refuse_overwrite
    from facesift.shards.damaged import DAMAGED_EXIT
    from facesift.pretrain.train import (LAUNCHER_LOCK_ENV, RESULT_ENV, USER_ERRORS, check_out,
                                         config_from_args_checked, one_line)
    try:
        cfg = config_from_args_checked(args)
        out = check_out(cfg.out)
        with output_lock(out, LOCK_NAME), tempfile.TemporaryDirectory(prefix="facesift-pretrain-") as tmp:
            refuse_overwrite(out, args.resume, args.restart)
            result_file = Path(tmp) / "result.json"
            env = {LAUNCHER_LOCK_ENV: str(out.resolve()), RESULT_ENV: str(result_file)}
            status = launch(args, nproc, env)
            result = json.loads(result_file.read_text()) if status == 0 and result_file.exists() else {}
    except USER_ERRORS as exc:
        log.error("%s", one_line(exc))
        return 2
    return DAMAGED_EXIT if status == 0 and result.get("damaged_shards") else status


def launch(args: argparse.Namespace, nproc: int, env: dict[str, str] | None = None) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "facesift.pretrain.train", *worker_argv(args)]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    child = subprocess.Popen(cmd, env={**os.environ, **(env or {})})
    restore = install_forwarding(child.pid)  # a scheduler's SIGTERM reaches torchrun, which tells the workers
    try:
        return child.wait()
    finally:
        restore()
