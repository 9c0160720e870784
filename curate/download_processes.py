"""`download` with its fetch threads split over N processes, results in input order.

Why: with `--detector none` every photo's work is HTTP, decode, resize, hashes and a JPEG
encode. The pixel work releases the GIL but the HTTP client, PIL's wrappers and the hand-offs do
not, so one interpreter tops out near one core whatever the thread count (measured on 2 cores,
2,000 sandbox photos: 3.3-3.6 s of work in one process, 2.5-2.8 s in two). Each child runs its own `Fetcher`
and thread pool on chunks of rows; only the finished samples (a few tens of KB a photo) cross
back, and the parent's single sink keeps the shard order, the dedupe and exactly-once as before.

Politeness holds over the processes together: each child gets `per_host // N` connections per
host, `workers / N` threads and `cpu_slots / N` decode slots, and N never exceeds `per_host`
(`auto_processes`), so the connections to one host stay within `per_host`. A child that dies
(killed, out of memory) stops the run with a clear error; its photos were never acknowledged,
so they stay pending and the next run redoes them.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import os
import pickle
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator

from facesift.curate.config import DownloadConfig
from facesift.curate.download import Fetched, Fetcher

PROCESS_MIN_PHOTOS = 1000   # below this, starting the processes (~0.4 s of imports each) costs more than it saves

_child: dict[str, Any] = {}


def auto_processes(cfg: DownloadConfig, photos: int) -> int:
    """`download.processes`: as set, or for 0 one per core when the run has enough photos; never
    more than `per_host` (each process holds at least one connection to a host) or `workers`."""
    n = cfg.processes or ((os.cpu_count() or 1) if photos >= PROCESS_MIN_PHOTOS else 1)
    return max(1, min(n, cfg.per_host, cfg.workers))


def child_config(cfg: DownloadConfig, processes: int) -> DownloadConfig:
    """One child's share of the threads, decode slots and per-host connections."""
    slots = cfg.cpu_slots or os.cpu_count() or 1
    return dataclasses.replace(cfg, workers=max(1, math.ceil(cfg.workers / processes)),
                               per_host=max(1, cfg.per_host // processes),
                               cpu_slots=max(1, slots // processes))


def _init(cfg: DownloadConfig, post: Callable) -> None:
    # Ctrl-C (and a SIGTERM to the group) reaches every process: the parent decides, finishing
    # or dropping what is in flight; a child stopped under it would read as a crash
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _child["fetcher"] = Fetcher(cfg, post)
    _child["pool"] = cf.ThreadPoolExecutor(cfg.workers, thread_name_prefix="fetch")


def _ready() -> int:
    time.sleep(0.05)   # so that every child, not the first one up, takes one of these
    return os.getpid()


def _picklable(fetched: Fetched) -> Fetched:
    """A post-processing exception that cannot cross a process boundary, by its name and message."""
    if isinstance(fetched.processed, BaseException):
        try:
            pickle.dumps(fetched.processed)
        except Exception:
            exc = fetched.processed
            fetched.processed = RuntimeError(f"{type(exc).__name__}: {exc}")
    return fetched


def _chunk(rows: list[dict]) -> list[Fetched]:
    return [_picklable(f) for f in _child["pool"].map(_child["fetcher"], rows)]


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def download_in_processes(rows: Iterable[dict], cfg: DownloadConfig, post: Callable,
                          processes: int) -> Iterator[Fetched]:
    """Fetched photos in the order of `rows`, from `processes` child processes (spawned: the
    parent already runs threads, which `fork` would copy mid-lock)."""
    per = child_config(cfg, processes)
    ex = cf.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_init, initargs=(per, post))
    pending: collections.deque = collections.deque()
    window = 2 * processes   # one chunk running and one queued per child
    try:
        # start every child before the first request: their imports are start-up, not download time
        for f in [ex.submit(_ready) for _ in range(processes)]:
            f.result()
        for chunk in _chunks(rows, per.workers):
            pending.append(ex.submit(_chunk, chunk))
            if len(pending) >= window:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool as exc:
        raise RuntimeError("a download process died (killed or out of memory); the photos it held "
                           "were not recorded, re-run the same command to redo them") from exc
    finally:
        ex.shutdown(wait=False, cancel_futures=True)
