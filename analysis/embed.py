"""Streaming, resumable embedding of shards into a memory-mapped float16 `.npy`.

Row order is the shard index order (tar order within a shard), so row i of every output
(`embeddings.npy`, `hashes.npy`, `keys.txt`, `meta.jsonl`) describes the same sample.
Progress is checkpointed every `chunk_rows` rows: the rows go into a preallocated
`np.lib.format.open_memmap` under a temporary name, are flushed, and only then does a small
ledger record how far the run got; a killed run re-reads the ledger and continues from there.
The outputs get their final names only when every row is written.

Under `torchrun` each rank joins the process group and embeds one contiguous slice of the
rows (`shards.rows.rank_slice`) into the same memmap. What a row is made of — backbone
features or the weight-free HOG / DCT embeddings — is `analysis.embedders`.
"""
from __future__ import annotations

import io
import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from facesift.analysis.config import EmbedConfig
from facesift.analysis.embedders import EmbedError, Embedder
from facesift.analysis.hashes import HASH_BYTES, sample_hashes
from facesift.common.atomic import atomic_write_json, atomic_write_text
from facesift.common.images import SHARD_IMAGE_EXTS
from facesift.common.runtime import env_rank, process_group_world
from facesift.shards.rows import StaleCountError, iter_rows, rank_slice, shard_counts

log = logging.getLogger(__name__)

META_FIELDS = ("photo_id", "owner", "query", "source", "license")
MEMBERS = ("json", *SHARD_IMAGE_EXTS)  # what a row is read from; other members are skipped unread


# ---------------------------------------------------------------------------- reading

def _rows(urls: list[str], counts: list[int], start: int, stop: int) -> Iterator[dict]:
    try:
        yield from iter_rows(urls, counts, start, stop, MEMBERS)
    except StaleCountError as exc:
        raise EmbedError(str(exc)) from None


def decode(sample: dict, embedder: Embedder, with_hashes: bool) -> tuple[np.ndarray | None, np.ndarray, dict]:
    """One sample -> (prepared embedder input or None, packed hashes, meta row). Never raises."""
    meta: dict[str, Any] = {"key": sample.get("__key__")}
    info: dict = {}
    if "json" in sample:
        try:
            info = json.loads(sample["json"])
            if not isinstance(info, dict):
                info = {}
        except (ValueError, UnicodeDecodeError):
            meta["error"] = "bad json"
    for name in META_FIELDS:
        if info.get(name) is not None:
            meta[name] = info[name]
    data = next((sample[e] for e in SHARD_IMAGE_EXTS if e in sample), None)
    if data is None:
        meta["error"] = "no image member"
        return None, np.zeros(2 * HASH_BYTES, np.uint8), meta
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        image = image.convert("RGB")
        prepared = embedder.prepare(image)
        hashes = sample_hashes(image, info) if with_hashes else np.zeros(2 * HASH_BYTES, np.uint8)
    except Exception as exc:  # a bad image is a counted skip, never a crash
        meta["error"] = f"undecodable image: {type(exc).__name__}: {exc}"[:200]
        return None, np.zeros(2 * HASH_BYTES, np.uint8), meta
    return prepared, hashes, meta


# ---------------------------------------------------------------------------- the run

def _batches(it: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for sample in it:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterator, ahead: int) -> Iterator:
    """`pool.map` with at most `ahead` items in flight (Executor.map would read the whole stream)."""
    queue: deque = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def _ranks(device: str) -> tuple[int, int]:
    """(rank, world size): under torchrun this process joins the job's process group first."""
    here = env_rank()
    if here.world_size > 1 and process_group_world() == 1:
        from facesift.pretrain.distributed import init_distributed
        try:
            init_distributed(device)
        except RuntimeError as exc:  # cuda asked for, none here
            raise EmbedError(str(exc)) from None
    world = process_group_world()
    return (here.rank if world > 1 else 0), world


def _barrier(world: int) -> None:
    if world > 1:
        from facesift.pretrain.distributed import barrier
        barrier()


def embed_shards(shards: Any, out: str | Path, cfg: EmbedConfig,
                 progress: bool = True, rank: int | None = None, world: int | None = None) -> dict:
    """Embed every sample of `shards` into `out`; resumes a previous partial run of the same job."""
    from facesift.common.progress import progress as progress_bar
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rank is None or world is None:
        rank, world = _ranks(cfg.device)
    final_emb = out / "embeddings.npy"
    info_path = out / "info.json"
    try:
        urls, counts = shard_counts(shards)
    except FileNotFoundError as exc:
        raise EmbedError(str(exc)) from None
    n = int(sum(counts))
    if n == 0:
        raise EmbedError(f"no samples in {shards} ({len(urls)} shard(s), all empty): nothing to embed")
    embedder = Embedder(cfg)
    job = {"shards": urls, "counts": counts, "rows": n, "dim": embedder.dim, "embedder": embedder.name,
           "hashes": bool(cfg.hashes)}
    if info_path.exists():
        old = json.loads(info_path.read_text())
        same = {k: old.get(k) for k in job} == job
        if old.get("complete") and same and final_emb.exists():
            log.info("%s: already complete (%d rows); nothing to do", out, n)
            return {**old, "embedded": 0, "resumed_from": n, "complete": True}
        if same and final_emb.exists() and not (out / ".embeddings.npy.partial").exists() \
                and (out / "meta.jsonl").exists():
            # killed between the final renames and the last info.json write: only that is left
            atomic_write_json(info_path, {**old, "complete": True})
            return {**old, "complete": True, "embedded": 0, "resumed_from": n}
        if not same:
            raise EmbedError(f"{out} holds the embeddings of a different job (other shards, counts or embedder): "
                             "use another --out or delete it")
    part_emb = out / ".embeddings.npy.partial"
    part_hash = out / ".hashes.npy.partial"
    if rank == 0:
        if not info_path.exists() or not part_emb.exists():
            for p in out.glob(".*.partial"):
                p.unlink()
            for p in out.glob(".progress-*.json"):
                p.unlink()
            np.lib.format.open_memmap(part_emb, mode="w+", dtype=np.float16, shape=(n, embedder.dim)).flush()
            np.lib.format.open_memmap(part_hash, mode="w+", dtype=np.uint8, shape=(n, 2 * HASH_BYTES)).flush()
            atomic_write_json(info_path, {**job, "complete": False, "config": asdict(cfg)})
    _barrier(world)
    stale = [p.name for p in out.glob(".progress-*.json") if not p.name.endswith(f"-of-{world}.json")]
    if stale:
        raise EmbedError(f"{out}: a previous run used another number of processes ({stale[0]}); "
                         f"resume with the same world size or delete the directory")

    start, stop = rank_slice(n, rank, world)
    ledger_path = out / f".progress-{rank}-of-{world}.json"
    rows_path = out / f".rows-{rank}-of-{world}.jsonl.partial"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {"done": 0, "rows_bytes": 0}
    done = int(ledger["done"])
    with open(rows_path, "ab") as fh:
        fh.truncate(int(ledger["rows_bytes"]))
    emb = np.load(part_emb, mmap_mode="r+")
    hashes = np.load(part_hash, mmap_mode="r+")
    resumed_from = done
    if done:
        log.info("resuming rank %d at row %d of its %d", rank, done, stop - start)

    embedded = errors = batches = 0
    pending_rows: list[dict] = []
    cursor = start + done

    def flush(upto: int) -> None:
        nonlocal pending_rows
        emb.flush()
        hashes.flush()
        with open(rows_path, "ab") as fh:
            fh.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in pending_rows).encode())
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        pending_rows = []
        atomic_write_json(ledger_path, {"done": upto - start, "rows_bytes": size}, indent=None)

    bar = progress_bar(total=stop - start, initial=done, desc=f"embed[{rank}]" if world > 1 else "embed",
               unit="img", disable=not progress, smoothing=0.1)
    last_flush = cursor
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        work = _ordered_map(pool, lambda b: [decode(s, embedder, cfg.hashes) for s in b],
                            _batches(_rows(urls, counts, cursor, stop), cfg.batch_size),
                            ahead=2 * max(1, cfg.workers))
        for decoded in work:
            ok = [i for i, (p, _, _) in enumerate(decoded) if p is not None]
            rows = np.zeros((len(decoded), embedder.dim), np.float32)
            if ok:
                rows[ok] = embedder([decoded[i][0] for i in ok])
            emb[cursor:cursor + len(decoded)] = rows.astype(np.float16)
            hashes[cursor:cursor + len(decoded)] = np.stack([h for _, h, _ in decoded])
            for _, _, meta in decoded:
                if "error" in meta:
                    errors += 1
                    log.warning("row %s (%s): %s", cursor, meta.get("key"), meta["error"])
                pending_rows.append(meta)
            cursor += len(decoded)
            embedded += len(decoded)
            batches += 1
            bar.update(len(decoded))
            if cursor - last_flush >= cfg.chunk_rows:
                flush(cursor)
                last_flush = cursor
            if cfg.max_batches is not None and batches >= cfg.max_batches:
                break
    bar.close()
    flush(cursor)
    del emb, hashes
    complete_slice = cursor >= stop
    _barrier(world)
    result = {**job, "embedded": embedded, "errors": errors, "resumed_from": resumed_from,
              "complete": False}
    if rank != 0:
        return result
    ledgers = [json.loads((out / f".progress-{r}-of-{world}.json").read_text()) if
               (out / f".progress-{r}-of-{world}.json").exists() else {"done": 0} for r in range(world)]
    if not complete_slice or any(l["done"] < (b - a) for l, (a, b) in
                                 zip(ledgers, (rank_slice(n, r, world) for r in range(world)))):
        log.info("stopped before the end; re-run the same command to continue")
        return result
    _finalise(out, job, cfg, world)
    result["complete"] = True
    return result


def _finalise(out: Path, job: dict, cfg: EmbedConfig, world: int) -> None:
    """Join the per-rank row files and give every output its final name."""
    lines: list[str] = []
    for r in range(world):
        lines.extend((out / f".rows-{r}-of-{world}.jsonl.partial").read_text().splitlines())
    if len(lines) != job["rows"]:
        raise EmbedError(f"internal: {len(lines)} metadata rows for {job['rows']} embeddings")
    rows = [json.loads(line) for line in lines]
    atomic_write_text(out / "meta.jsonl", "".join(line + "\n" for line in lines))
    atomic_write_text(out / "keys.txt", "".join(f"{r['key']}\n" for r in rows))
    if (out / ".hashes.npy.partial").exists():
        os.replace(out / ".hashes.npy.partial", out / "hashes.npy")
    os.replace(out / ".embeddings.npy.partial", out / "embeddings.npy")
    errors = sum("error" in r for r in rows)
    atomic_write_json(out / "info.json", {**job, "complete": True, "errors": errors, "config": asdict(cfg),
                                          "hash_layout": "hashes.npy[:, 0:8] pHash, [:, 8:16] dHash (packed bits)"})
    for p in list(out.glob(".rows-*.partial")) + list(out.glob(".progress-*.json")):
        p.unlink()


def load_embeddings(directory: str | Path) -> dict:
    """The outputs of a complete `embed` run: embeddings (memmap), hashes, keys, meta, info."""
    directory = Path(directory)
    info_path = directory / "info.json"
    if not info_path.exists() or not (directory / "embeddings.npy").exists():
        raise EmbedError(f"{directory}: no complete embeddings (run `facesift embed --out {directory}` first)")
    info = json.loads(info_path.read_text())
    meta = [json.loads(line) for line in (directory / "meta.jsonl").read_text().splitlines()]
    keys = [m["key"] for m in meta]
    return {"emb": np.load(directory / "embeddings.npy", mmap_mode="r"),
            "hashes": np.load(directory / "hashes.npy", mmap_mode="r") if (directory / "hashes.npy").exists() else None,
            "keys": keys, "meta": meta, "info": info}
