"""One run per output directory: a second run on the same `--out` stops at once, naming the first.

Two curates (or two pretrains) writing one directory rename each other's temporaries and
interleave their catalog writes; nothing good comes of it, so the second exits 2 before any work.
The lock is an advisory `flock` on `<out>/.facesift.lock`, so the kernel drops it whatever way
the holder ends (exit, exception, `kill -9`, a crashed node): a lock file left by a killed run
is stale by construction and the next run takes it over. The file records the holder's pid,
host and command so the refusal can say who holds it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".facesift.lock"


class LockHeld(RuntimeError):
    """Another live process holds the output directory."""

    def __init__(self, path: Path, holder: dict):
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        super().__init__(f"{path.parent} is in use by another run: {who}; wait for it or use another output directory")
        self.holder = holder


def _read_holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    return {}


def rank_lock_name() -> str:
    """The lock of this rank of a torchrun job (the plain name outside one): ranks that split one
    job's work over a shared output directory do not refuse each other, a second job still does."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return LOCK_NAME if world == 1 else f"{LOCK_NAME}.rank{os.environ.get('RANK', '0')}"


@contextlib.contextmanager
def output_lock(out: str | Path, name: str = LOCK_NAME, command: str | None = None) -> Iterator[Path]:
    """Hold `out`'s lock for the block; raises `LockHeld` at once if a live process has it.

    Processes that share a directory on purpose take distinct names: each rank of one torchrun
    job locks `.facesift.lock.rankR` (`rank_lock_name`), and `curate --part K/N` locks
    `.facesift.lock.partK`.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory: choose another output directory")
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _read_holder(fd)) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time()),
                  "command": command or " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:4]))}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
