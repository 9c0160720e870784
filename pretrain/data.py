"""Streaming multi-crop batches from webdataset shards, equal per rank, resumable exactly.

Each rank × DataLoader worker runs one small generator pipeline (webdataset stages plus our
own): shard URLs → tar samples → optional key filter → seeded shuffle buffer → skip (resume)
→ decode + crops → batch → photometric augmentation (or, with `data.augment_on_device`, decode +
crop boxes → batch, the crops and colour being done on the training device). Design points:

* Equal batches per rank whatever the shard sizes: shards are resampled with replacement
  (`wds.ResampledShards`, default) or split by rank and worker and cycled (`resampled:
  false`), so every stream is infinite; the loader is cut to the same `steps` on every rank
  (`EpochLoader`). No rank can run dry and hang DDP.
* Determinism: every random choice comes from seeds derived from (seed, epoch, rank, worker
  role, sample/batch index), so an epoch is a pure function of its seed.
* Exact resume: batches carry their worker role and the stream position; the trainer saves
  them, and a resumed epoch skips the consumed samples *before* decoding, and rotates worker
  roles so the DataLoader's round robin continues where it stopped.
* Corrupt samples (undecodable images, no `jpg`) are skipped and counted per batch, never
  fatal. A damaged shard (truncated, zero bytes, not a tar, a failing `pipe:`) is read with the
  shards package's reader, which keeps the complete samples before the damage and raises
  `DamagedShard` with the reason: the stream takes those samples, goes on with the next shard,
  and reports the shard once per worker in the batch's ``damaged``; the trainer names it in one
  warning line, counts it (`damaged_shards=N`) and exits 1 at the end (docs/shards.md, "Damaged
  shards"). A damaged shard reads the same way every time, so the stream stays a pure function
  of its seed and resume stays exact. A stream that yields nothing at all raises `DataError`
  instead of spinning.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from facesift.pretrain.config import CropConfig, DataConfig
from facesift.pretrain.multicrop import (augment_batch, collate_crops, collate_images, crop_plan, geometric_crops,
                                image_and_boxes)
from facesift.pretrain.posebalance import PoseTable, keep_sample, sample_yaw
from facesift.shards.index import index_location, read_index, shard_urls
from facesift.shards.damaged import describe
from facesift.shards.reader import DamagedShard, iter_keys, iter_samples
from facesift.common.stopping import ignore_in_worker

log = logging.getLogger(__name__)
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class DataError(ValueError):
    """The shards cannot feed training at all (all damaged or empty, nothing decodable): exit 2."""


class _ImageExtensions:
    """The members a training sample needs (any case, like webdataset's lower-cased suffixes);
    with `metadata`, the json member too (the pose balance reads its yaw)."""

    def __init__(self, metadata: bool = False):
        self.metadata = metadata

    def __contains__(self, ext: object) -> bool:
        if self.metadata and isinstance(ext, str) and ext.lower() == "json":
            return True
        return isinstance(ext, str) and ext.lower() in IMAGE_KEYS


def describe_damage(exc: DamagedShard) -> str:
    """The one warning line that names a damaged shard, in the shards commands' words (what is
    kept per URL, sent from the loader workers and checkpointed)."""
    return describe(exc)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, identical in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def read_keys(path: str | Path) -> set[str]:
    """One sample key per line (blank lines and '#' comments ignored)."""
    keys = {line.strip() for line in Path(path).read_text().splitlines()}
    return {k for k in keys if k and not k.startswith("#")}


def count_samples(spec: str, keys: set[str] | None = None, damaged: dict[str, str] | None = None) -> int:
    """Samples in a shard spec: the index's counts (local or remote), or counting keys in local tars.

    A damaged local tar counts its complete samples before the damage (what the stream will
    read from it) and, when `damaged` is given, is recorded there (URL -> `describe_damage`)."""
    if keys:
        return len(keys)
    location = index_location(spec)
    if location is not None:
        return sum(int(e.get("nsamples", 0)) for e in read_index(location)["shardlist"])
    urls = shard_urls(spec)
    if any(u.startswith(("pipe:", "http://", "https://")) for u in urls):
        raise ValueError("remote shards without an index.json: set data.epoch_size (samples per epoch)")
    total = 0
    for url in urls:
        try:
            total += sum(1 for _ in iter_keys(url))
        except DamagedShard as exc:
            total += exc.samples
            if damaged is not None:
                damaged.setdefault(url, describe_damage(exc))
    return total


@dataclass
class StreamState:
    """Where each worker role of one rank stands in the current epoch."""
    num_workers: int = 1
    consumed: dict[int, int] = field(default_factory=dict)   # role -> samples taken from its shuffled stream
    batches: dict[int, int] = field(default_factory=dict)    # role -> batches produced
    steps: int = 0                                           # batches the trainer has used this epoch

    def update(self, batch: dict) -> None:
        self.consumed[batch["role"]] = batch["consumed"]
        self.batches[batch["role"]] = batch["batch_index"] + 1
        self.steps += 1


def _const(value: int) -> int:
    return value


def _seeded_shuffle(src, bufsize: int, rng: random.Random):
    buf = []
    for sample in src:
        buf.append(sample)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


class ShardStream(IterableDataset):
    """Infinite multi-crop batches for one rank; see the module docstring."""

    def __init__(self, urls: list[str], crops: CropConfig, data: DataConfig, batch_size: int, seed: int,
                 epoch: int, rank: int = 0, world_size: int = 1, keys: set[str] | None = None,
                 state: StreamState | None = None, on_device: bool = False, pose: PoseTable | None = None):
        self.urls, self.crops, self.data = urls, crops, data
        self.pose = pose    # data.pose_balance: keep probabilities by yaw bin
        self.batch_size, self.seed, self.epoch = batch_size, seed, epoch
        self.rank, self.world_size, self.keys = rank, world_size, keys
        self.state = state or StreamState()
        self.on_device = on_device  # workers only decode and draw boxes; crops are cut on the device
        self.plan = crop_plan(crops)

    def _role(self) -> tuple[int, int]:
        info = get_worker_info()
        n = info.num_workers if info else 1
        wid = info.id if info else 0
        offset = self.state.steps % n if self.state.num_workers == n else 0
        return (wid + offset) % n, n

    def _mine(self, role: int, n_roles: int) -> list[str]:
        """The shards this rank × worker role reads without `resampled`: split by rank, then worker."""
        mine = self.urls[self.rank::self.world_size][role::n_roles]
        return mine or [self.urls[(self.rank * n_roles + role) % len(self.urls)]]

    def _shard_source(self, role: int, n_roles: int, rng: random.Random) -> Iterator[dict]:
        if self.data.resampled:
            yield from wds.ResampledShards(self.urls, seed=derive_seed(self.seed, self.epoch),
                                           worker_seed=functools.partial(_const, derive_seed(self.rank, role)),
                                           deterministic=True)
            return
        mine = self._mine(role, n_roles)
        if not self.urls[self.rank::self.world_size][role::n_roles]:
            log.warning("fewer shards than ranks × workers: rank %d worker %d re-reads %s",
                        self.rank, role, mine[0])
        while True:  # cycle: a rank with smaller shards never runs dry before the epoch is cut
            order = list(mine)
            rng.shuffle(order)
            for url in order:
                yield {"url": url}

    def _samples(self, sources: Iterator[dict], candidates: list[str], found: dict[str, str]) -> Iterator[dict]:
        """The samples of each shard in turn; a damaged shard gives its complete samples, lands in
        `found` (URL -> `describe_damage`) and the stream goes on. Raises `DataError` once every shard this
        stream can draw has been tried without a single sample (else it would spin for ever)."""
        tried: set[str] = set()
        produced = False
        for source in sources:
            url = source["url"]
            tried.add(url)
            try:
                for sample in iter_samples(url, _ImageExtensions(metadata=self.pose is not None)):
                    produced = True
                    yield sample
            except DamagedShard as exc:
                found.setdefault(url, describe_damage(exc))
                produced = produced or exc.samples > 0
            if not produced and tried.issuperset(candidates):
                shown = "; ".join(r.split(";")[0].removeprefix("damaged shard ") for r in list(found.values())[:3])
                raise DataError(f"no sample in any of the {len(candidates)} shard(s) of rank {self.rank}'s stream: "
                                f"all empty or damaged{f' ({shown})' if shown else ''}")

    def __iter__(self):
        role, n_roles = self._role()
        base = derive_seed(self.seed, self.epoch, self.rank, role)
        rng = random.Random(base)
        found: dict[str, str] = {}   # damaged shards this worker met; reported in the next batch
        reported: set[str] = set()
        candidates = self.urls if self.data.resampled else self._mine(role, n_roles)
        samples = self._samples(self._shard_source(role, n_roles, rng), candidates, found)
        if self.keys is not None:
            samples = (s for s in samples if s.get("__key__") in self.keys)
        if self.pose is not None:   # before the shuffle: the kept stream is a function of (seed, epoch)
            samples = (s for s in samples
                       if keep_sample(self.pose, s.get("__key__", ""), sample_yaw(s), self.seed, self.epoch))
        samples = _seeded_shuffle(samples, self.data.shuffle_buffer, rng)
        skip = self.state.consumed.get(role, 0) if self.state.num_workers == n_roles else 0
        batch_index = self.state.batches.get(role, 0) if self.state.num_workers == n_roles else 0
        position, bad, good, crops, names = 0, 0, 0, [], []
        for sample in samples:
            position += 1
            if position <= skip:
                continue
            members = {k.lower(): v for k, v in sample.items() if not k.startswith("__")}
            data = next((members[k] for k in IMAGE_KEYS if k in members), None)
            try:
                if data is None:
                    raise ValueError("no image member")
                sample_rng = random.Random(derive_seed(base, position))
                cut = image_and_boxes if self.on_device else geometric_crops
                crops.append(cut(data, self.plan, sample_rng))
                names.append(sample.get("__key__", ""))
                good += 1
            except Exception as exn:  # noqa: BLE001 - any undecodable sample is a counted skip
                bad += 1
                if bad > 1000 and good == 0:
                    raise DataError(f"no decodable image in the first {bad} samples of {self.urls[:2]}...: "
                                    f"last error {exn!r}") from exn
                log.debug("skipping sample %s: %s", sample.get("__key__"), exn)
                continue
            if len(crops) == self.batch_size:
                seed = derive_seed(base, "batch", batch_index)
                if self.on_device:
                    images, boxes = collate_images(crops)
                    payload = {"images": images, "boxes": boxes}
                else:
                    gen = torch.Generator().manual_seed(seed)
                    payload = {"crops": augment_batch(collate_crops(crops), self.crops, gen)}
                news = {u: r for u, r in found.items() if u not in reported}
                reported.update(news)
                yield {**payload, "keys": names, "role": role, "consumed": position, "batch_index": batch_index,
                       "bad": bad, "damaged": news, "seed": seed}
                batch_index += 1
                crops, names, bad = [], [], 0
        raise DataError(f"shard stream ended without samples (rank {self.rank}, worker {role}): "
                        "empty shards, or a key list that matches nothing?")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers are processes: one BLAS thread each avoids oversubscription
    ignore_in_worker()        # Ctrl-C reaches the whole group; the trainer stops them after its checkpoint


def make_loader(urls: list[str], crops: CropConfig, data: DataConfig, batch_size: int, seed: int,
                epoch: int, steps: int, rank: int = 0, world_size: int = 1, keys: set[str] | None = None,
                state: StreamState | None = None, pin_memory: bool = False,
                pose: PoseTable | None = None) -> "EpochLoader":
    """`steps` batches of this rank's stream for one epoch (fewer when resuming mid-epoch)."""
    state = state or StreamState(num_workers=max(1, data.workers))
    if steps <= state.steps:  # an epoch of no batches is a bug upstream (webdataset read it as endless)
        raise ValueError(f"no batches left: the epoch has {steps} steps and {state.steps} are done")
    if state.num_workers != max(1, data.workers) and state.steps:
        log.warning("resuming with %d workers instead of %d: this epoch continues on fresh streams "
                    "(not sample-exact)", data.workers, state.num_workers)
    ds = ShardStream(urls, crops, data, batch_size, seed, epoch, rank, world_size, keys, state,
                     on_device=data.augment_on_device, pose=pose)
    kwargs = dict(batch_size=None, num_workers=data.workers, pin_memory=pin_memory)
    if data.workers > 0:
        kwargs.update(prefetch_factor=data.prefetch_factor, worker_init_fn=_worker_init)
    return EpochLoader(DataLoader(ds, **kwargs), steps - state.steps)


class EpochLoader:
    """`nbatches` batches of an endless DataLoader, its workers shut down however iteration ends.

    Like webdataset's `WebLoader.with_epoch` (which it replaces), plus the shutdown: a worker's
    error reaches the trainer inside a reference cycle (torch re-raises it from a frame that
    holds it), so the DataLoader iterator would outlive it until a garbage collection; at exit,
    multiprocessing then SIGTERMs the workers — which ignore stop signals (the trainer decides
    when they stop) — and waits for them for ever. Shutting them down here, on the way out,
    ends every path cleanly."""

    def __init__(self, loader: DataLoader, nbatches: int):
        self.loader, self.nbatches = loader, nbatches

    def __len__(self) -> int:
        return self.nbatches

    def __iter__(self) -> Iterator[dict]:
        it = iter(self.loader)
        try:
            for _ in range(self.nbatches):
                yield next(it)
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)  # torch's multi-process iterator
            if shutdown is not None:
                shutdown()
