"""Streaming multi-crop batches from webdataset shards, equal per rank, resumable exactly.

Each rank × DataLoader worker runs one small generator pipeline (webdataset stages plus our
own): shard URLs → tar samples → optional key filter → seeded shuffle buffer → skip (resume)
→ decode + crops → batch → photometric augmentation (or, with `data.augment_on_device`, decode +
crop boxes → batch, the crops and colour being done on the training device). Design points:

* Equal batches per rank whatever the shard sizes: shards are resampled with replacement
  (`wds.ResampledShards`, default) or split by rank and worker and cycled (`resampled:
  false`), so every stream is infinite; the loader is cut to the same `steps` on every rank
  (`WebLoader.with_epoch`). No rank can run dry and hang DDP.
* Determinism: every random choice comes from seeds derived from (seed, epoch, rank, worker
  role, sample/batch index), so an epoch is a pure function of its seed.
* Exact resume: batches carry their worker role and the stream position; the trainer saves
  them, and a resumed epoch skips the consumed samples *before* decoding, and rotates worker
  roles so the DataLoader's round robin continues where it stopped.
* Corrupt samples (bad tar members, undecodable images, no `jpg`) are skipped and counted
  per batch, never fatal; a stream that yields nothing at all raises instead of spinning.
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
from torch.utils.data import IterableDataset, get_worker_info

from facesift.pretrain.config import CropConfig, DataConfig
from facesift.pretrain.multicrop import (augment_batch, collate_crops, collate_images, crop_plan, geometric_crops,
                                image_and_boxes)
from facesift.shards.index import index_location, read_index, shard_urls
from facesift.common.stopping import ignore_in_worker

log = logging.getLogger(__name__)
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, identical in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def read_keys(path: str | Path) -> set[str]:
    """One sample key per line (blank lines and '#' comments ignored)."""
    keys = {line.strip() for line in Path(path).read_text().splitlines()}
    return {k for k in keys if k and not k.startswith("#")}


def count_samples(spec: str, keys: set[str] | None = None) -> int:
    """Samples in a shard spec: the index's counts (local or remote), or counting keys in local tars."""
    if keys:
        return len(keys)
    location = index_location(spec)
    if location is not None:
        return sum(int(e.get("nsamples", 0)) for e in read_index(location)["shardlist"])
    from facesift.shards.reader import iter_keys
    urls = shard_urls(spec)
    if any(u.startswith(("pipe:", "http://", "https://")) for u in urls):
        raise ValueError("remote shards without an index.json: set data.epoch_size (samples per epoch)")
    return sum(1 for u in urls for _ in iter_keys(u))


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
                 state: StreamState | None = None, on_device: bool = False):
        self.urls, self.crops, self.data = urls, crops, data
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

    def _shard_source(self, role: int, n_roles: int, rng: random.Random) -> Iterator[dict]:
        if self.data.resampled:
            yield from wds.ResampledShards(self.urls, seed=derive_seed(self.seed, self.epoch),
                                           worker_seed=functools.partial(_const, derive_seed(self.rank, role)),
                                           deterministic=True)
            return
        mine = self.urls[self.rank::self.world_size][role::n_roles]  # split_by_node, then by worker
        if not mine:
            mine = [self.urls[(self.rank * n_roles + role) % len(self.urls)]]
            log.warning("fewer shards than ranks × workers: rank %d worker %d re-reads %s",
                        self.rank, role, mine[0])
        while True:  # cycle: a rank with smaller shards never runs dry before with_epoch cuts it
            order = list(mine)
            rng.shuffle(order)
            for url in order:
                yield {"url": url}

    def __iter__(self):
        role, n_roles = self._role()
        base = derive_seed(self.seed, self.epoch, self.rank, role)
        rng = random.Random(base)
        errors = {"n": 0}

        def handler(exn: Exception) -> bool:
            errors["n"] += 1
            log.warning("skipping unreadable shard data: %s", exn)
            return True

        samples = wds.tarfile_to_samples(handler=handler)(self._shard_source(role, n_roles, rng))
        if self.keys is not None:
            samples = (s for s in samples if s.get("__key__") in self.keys)
        samples = _seeded_shuffle(samples, self.data.shuffle_buffer, rng)
        skip = self.state.consumed.get(role, 0) if self.state.num_workers == n_roles else 0
        batch_index = self.state.batches.get(role, 0) if self.state.num_workers == n_roles else 0
        position, bad, good, crops, names = 0, 0, 0, [], []
        for sample in samples:
            position += 1
            if position <= skip:
                continue
            data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
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
                    raise RuntimeError(f"no decodable image in the first {bad} samples of {self.urls[:2]}...: "
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
                yield {**payload, "keys": names, "role": role, "consumed": position, "batch_index": batch_index,
                       "bad": bad + errors["n"], "seed": seed}
                batch_index += 1
                crops, names, bad, errors["n"] = [], [], 0, 0
        raise RuntimeError(f"shard stream ended without samples (rank {self.rank}, worker {role}): "
                           "empty shards, or a key list that matches nothing?")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers are processes: one BLAS thread each avoids oversubscription
    ignore_in_worker()        # Ctrl-C reaches the whole group; the trainer stops them after its checkpoint


def make_loader(urls: list[str], crops: CropConfig, data: DataConfig, batch_size: int, seed: int,
                epoch: int, steps: int, rank: int = 0, world_size: int = 1, keys: set[str] | None = None,
                state: StreamState | None = None, pin_memory: bool = False) -> wds.WebLoader:
    """`steps` batches of this rank's stream for one epoch (fewer when resuming mid-epoch)."""
    state = state or StreamState(num_workers=max(1, data.workers))
    if steps <= state.steps:  # webdataset reads with_epoch(0) as "no limit": never ask for it
        raise ValueError(f"no batches left: the epoch has {steps} steps and {state.steps} are done")
    if state.num_workers != max(1, data.workers) and state.steps:
        log.warning("resuming with %d workers instead of %d: this epoch continues on fresh streams "
                    "(not sample-exact)", data.workers, state.num_workers)
    ds = ShardStream(urls, crops, data, batch_size, seed, epoch, rank, world_size, keys, state,
                     on_device=data.augment_on_device)
    kwargs = dict(batch_size=None, num_workers=data.workers, pin_memory=pin_memory)
    if data.workers > 0:
        kwargs.update(prefetch_factor=data.prefetch_factor, worker_init_fn=_worker_init)
    return wds.WebLoader(ds, **kwargs).with_epoch(nbatches=steps - state.steps)
