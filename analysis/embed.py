"""Streaming, resumable embedding of shards into a memory-mapped float16 `.npy`.

Row order is the shard index order (tar order within a shard), so row i of every output
(`embeddings.npy`, `hashes.npy`, `keys.txt`, `meta.jsonl`) describes the same sample.
Progress is checkpointed every `chunk_rows` rows: the rows go into a preallocated
`np.lib.format.open_memmap` under a temporary name, are flushed, and only then does a small
ledger record how far the run got; a killed run re-reads the ledger and continues from there.
The outputs get their final names only when every row is written.

Under `torchrun` each rank embeds one contiguous slice of the rows into the same memmap.

Embedders: with a backbone, the pooled ResNet features (what SwAV learned). Without one, a
weight-free embedding made for near-duplicate detection (no weights can be assumed present):
  * `hog` (default): the grey image reduced to 32x32, gradient-orientation histograms
    (9 unsigned bins) over an 8x8 grid of 4x4-pixel cells, every pixel voting bilinearly into
    the nearest cells and bins, weighted by a centred Gaussian (sigma 0.6 of the half-width:
    the face counts, the background and the borders a crop changes count less), square-rooted
    and L2-normalised (576-d). Gradients ignore brightness, the normalisation ignores contrast,
    soft binning tolerates the few-pixel shifts of a re-crop, a resize or alignment jitter,
    and JPEG blocking barely moves them — while a different expression or light direction does.
  * `dct`: the 2-D DCT of the 32x32 grey image, its 16x16 lowest frequencies without DC,
    L2-normalised (a continuous pHash).
Measured (after the redundancy stage's mean-centring, pair precision / recall): on aligned
face crops from the demo's sandbox (variants of shared source photos, curated with MTCNN),
`hog` at cosine 0.85 gives 0.96 / 0.67 (0.80: 0.92 / 0.84), `dct` at its best 0.85 / 0.79; on
the tests' unaligned known-duplicate set with the Yale lighting/expression hard negatives,
`hog` at 0.85 gives 0.38 / 0.58 and pHash at Hamming 4 0.33 / 0.43.
"""
from __future__ import annotations

import io
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from facesift.analysis.config import EmbedConfig
from facesift.analysis.hashes import HASH_BYTES, sample_hashes
from facesift.shards.index import index_entries, index_location, shard_urls
from facesift.shards.reader import iter_keys
from facesift.common.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
META_FIELDS = ("photo_id", "owner", "query", "source", "license")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class EmbedError(RuntimeError):
    """A problem the user must fix (bad input, mismatched resume); shown without a traceback."""


# ---------------------------------------------------------------------------- plan

def shard_counts(spec: Any) -> tuple[list[str], list[int]]:
    """Shard URLs and samples per shard: from index.json `nsamples` when present, else counted."""
    urls = shard_urls(spec)
    counts: list[int | None] = [None] * len(urls)
    location = index_location(spec)
    if location is not None:
        entries = index_entries(location)
        if [u for u, _ in entries] == urls:
            counts = [e.get("nsamples") for _, e in entries]
    for i, url in enumerate(urls):
        if counts[i] is None:
            counts[i] = sum(1 for _ in iter_keys(url))
    return urls, [int(c) for c in counts]


def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of one rank; slices cover 0..n exactly once."""
    return n * rank // world, n * (rank + 1) // world


# ---------------------------------------------------------------------------- embedders

def hog_embedding(image: Image.Image, size: int = 32, cell: int = 4, bins: int = 9,
                  sigma: float = 0.6) -> np.ndarray:
    """Soft-binned, centre-weighted gradient-orientation histograms (see module docstring)."""
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    gy, gx = np.gradient(grey)
    c = (np.arange(size) - (size - 1) / 2) / (size / 2)
    mag = np.hypot(gx, gy) * np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma ** 2))
    pos = (np.arctan2(gy, gx) % np.pi) / np.pi * bins
    b0 = np.floor(pos).astype(np.int64) % bins
    w_ang = pos - np.floor(pos)
    cells = size // cell
    # each pixel votes into the 2x2 nearest cell centres (bilinear) and 2 nearest orientation bins
    centre = (np.arange(size) + 0.5) / cell - 0.5
    c0 = np.floor(centre).astype(np.int64)
    w_pos = centre - c0
    hist = np.zeros((cells + 2) * (cells + 2) * bins)
    for dy in (0, 1):
        wy = (w_pos if dy else 1 - w_pos)[:, None]
        for dx in (0, 1):
            wx = (w_pos if dx else 1 - w_pos)[None, :]
            base = ((c0[:, None] + 1 + dy) * (cells + 2) + (c0[None, :] + 1 + dx)) * bins
            w = mag * wy * wx
            hist += np.bincount((base + b0).ravel(), (w * (1 - w_ang)).ravel(), len(hist))
            hist += np.bincount((base + (b0 + 1) % bins).ravel(), (w * w_ang).ravel(), len(hist))
    hist = np.sqrt(hist.reshape(cells + 2, cells + 2, bins)[1:-1, 1:-1].reshape(-1)).astype(np.float32)
    norm = float(np.linalg.norm(hist))
    return hist / norm if norm > 0 else hist


def dct_embedding(image: Image.Image, size: int = 32, keep: int = 12) -> np.ndarray:
    """Low-frequency DCT of the grey image, DC dropped, L2-normalised (see module docstring)."""
    from scipy.fft import dctn
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    coeffs = dctn(grey, norm="ortho")[:keep, :keep].reshape(-1)[1:]
    norm = float(np.linalg.norm(coeffs))
    return coeffs / norm if norm > 0 else coeffs


def _cnn_input(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to `size`, centre-crop square, HWC uint8."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                        Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


class Embedder:
    """Turns decoded images into L2-normalised float32 rows; `prepare` runs in decode threads."""

    def __init__(self, cfg: EmbedConfig):
        self.cfg = cfg
        if cfg.backbone:
            import torch
            from facesift.pretrain.backbone import load_backbone, infer_arch, clean_state_dict
            self.device = _pick_device(cfg.device)
            self.model = load_backbone(cfg.backbone, arch=cfg.arch).eval().to(self.device)
            if cfg.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.dim = int(self.model.feature_dim)
            arch = cfg.arch or infer_arch(clean_state_dict(
                torch.load(cfg.backbone, map_location="cpu", weights_only=True)))
            self.name = f"{arch}:{Path(cfg.backbone).name}@{cfg.image_size}"
        elif cfg.embedding == "hog":
            self.device, self.model = "cpu", None
            self.dim = (cfg.hog_size // cfg.hog_cell) ** 2 * 9
            self.name = f"hog{cfg.hog_size}/{cfg.hog_cell}-soft-g0.6"
        elif cfg.embedding == "dct":
            self.device, self.model = "cpu", None
            self.dim = cfg.dct_keep * cfg.dct_keep - 1
            self.name = f"dct{cfg.dct_size}x{cfg.dct_keep}"
        else:
            raise EmbedError(f"embedding must be hog or dct (or give --backbone), not {cfg.embedding!r}")

    def prepare(self, image: Image.Image) -> np.ndarray:
        if self.model is None:
            if self.cfg.embedding == "hog":
                return hog_embedding(image, self.cfg.hog_size, self.cfg.hog_cell)
            return dct_embedding(image, self.cfg.dct_size, self.cfg.dct_keep)
        return _cnn_input(image, self.cfg.image_size)

    def __call__(self, prepared: list[np.ndarray]) -> np.ndarray:
        if self.model is None:
            return np.stack(prepared).astype(np.float32)
        import torch
        batch = torch.from_numpy(np.stack(prepared)).to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.from_numpy(_MEAN).to(batch.device)[None, :, None, None]
        std = torch.from_numpy(_STD).to(batch.device)[None, :, None, None]
        batch = (batch - mean) / std
        if self.cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        use_amp = self.cfg.amp and batch.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=use_amp):
            feats = self.model(batch).float()
        feats = torch.nn.functional.normalize(feats, dim=1)
        return feats.cpu().numpy()


def _pick_device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# ---------------------------------------------------------------------------- reading

def iter_samples(urls: list[str], counts: list[int], start: int, stop: int) -> Iterator[dict]:
    """Raw samples of rows [start, stop) in index order, opening only the shards needed."""
    import webdataset as wds
    offsets = np.concatenate([[0], np.cumsum(counts)])
    row = start
    for s, url in enumerate(urls):
        if offsets[s + 1] <= row or row >= stop:
            continue
        skip = row - int(offsets[s])
        seen = 0
        for sample in wds.WebDataset(url, shardshuffle=False, empty_check=False):
            if seen < skip:
                seen += 1
                continue
            if row >= stop:
                break
            yield sample
            seen += 1
            row += 1
        if row < min(stop, int(offsets[s + 1])):
            raise EmbedError(f"{url}: expected {counts[s]} samples, found {seen}: the index is stale "
                             "(re-run `facesift shards verify`) or the shard is truncated")


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
    data = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
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
    from collections import deque
    queue: deque = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > ahead:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def _dist() -> tuple[int, int]:
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return 0, 1


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def embed_shards(shards: Any, out: str | Path, cfg: EmbedConfig,
                 progress: bool = True, rank: int | None = None, world: int | None = None) -> dict:
    """Embed every sample of `shards` into `out`; resumes a previous partial run of the same job."""
    from tqdm import tqdm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if rank is None or world is None:
        rank, world = _dist()
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

    bar = tqdm(total=stop - start, initial=done, desc=f"embed[{rank}]" if world > 1 else "embed",
               unit="img", disable=not progress, smoothing=0.1)
    last_flush = cursor
    with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
        work = _ordered_map(pool, lambda b: [decode(s, embedder, cfg.hashes) for s in b],
                            _batches(iter_samples(urls, counts, cursor, stop), cfg.batch_size),
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
