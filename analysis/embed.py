"""Streaming, resumable embedding of shards into a memory-mapped float16 `.npy`.

Row order is the shard index order (tar order within a shard), so row i of every output
(`embeddings.npy`, `hashes.npy`, `keys.txt`, `meta.jsonl`) describes the same sample.
Progress is checkpointed every `chunk_rows` rows: the rows go into a preallocated
`np.lib.format.open_memmap` under a temporary name, are flushed, and only then does a small
ledger record how far the run got; a killed run re-reads the ledger and continues from there.
The outputs get their final names only when every row is written.

That unfinished state (`info.json` with complete=false, `.embeddings.npy.partial`,
`.hashes.npy.partial`, `.rows-R-of-W.jsonl.partial`, `.progress-R-of-W.json`) is the resume
point of one job — the shards, counts and embedder recorded in `info.json` — and only the same
command uses it; it is removed when the job completes, and at once when a run stops before its
first checkpoint (it would hold nothing). A stop (Ctrl-C, SIGTERM, `--max-batches`, a shard that
breaks while being read) always writes a consistent checkpoint first.

Rows must follow the index, so a damaged shard is refused rather than skipped: skipping it
would shift every later row. Local shards are checked before anything is written
(`shards.rows.scan_counts`: headers only); a remote shard found damaged while it is read
stops the run at a checkpoint (exit 1), and the same command continues once it reads whole.

Under `torchrun` each rank joins the process group and embeds one contiguous slice of the
rows (`shards.rows.rank_slice`) into the same memmap; each holds its own lock on `out`
(`common.lock.rank_lock_name`), so a second job on the same directory is refused at once.
What a row is made of — backbone features or the weight-free HOG / DCT embeddings — is
`analysis.embedders`.
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
from facesift.common.lock import output_lock, rank_lock_name
from facesift.common.runtime import env_rank, process_group_world
from facesift.common.stopping import requested
from facesift.shards.reader import DamagedShard
from facesift.shards.rows import StaleCountError, iter_rows, rank_slice, scan_counts

log = logging.getLogger(__name__)

META_FIELDS = ("photo_id", "owner", "query", "source", "license")
MEMBERS = ("json", *SHARD_IMAGE_EXTS)  # what a row is read from; other members are skipped unread
PART_EMB, PART_HASH = ".embeddings.npy.partial", ".hashes.npy.partial"


class DamagedInput(EmbedError):
    """Shards that do not read to their end: embedding them would shift every later row (exit 1)."""

    def __init__(self, damaged: list[DamagedShard]):
        self.damaged = damaged
        super().__init__(f"{len(damaged)} damaged shard(s), named above: embed needs every shard whole "
                         "(row i is the i-th sample of the index); repair or re-fetch them (`facesift shards "
                         "verify` lists every problem) or leave them out of --shards. Nothing was written.")


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
    """Samples in lists of `size`; on a damaged shard the rows read before it still come out
    (then the damage is raised), so the checkpoint reaches the damage exactly."""
    batch: list[dict] = []
    try:
        for sample in it:
            batch.append(sample)
            if len(batch) == size:
                yield batch
                batch = []
    except (DamagedShard, EmbedError):
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterator, ahead: int) -> Iterator:
    """`pool.map` with at most `ahead` items in flight (Executor.map would read the whole stream);
    when `items` breaks off with a damaged shard, the items already submitted are still delivered."""
    queue: deque = deque()
    error: Exception | None = None
    try:
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) > ahead:
                yield queue.popleft().result()
    except (DamagedShard, EmbedError) as exc:
        error = exc
    while queue:
        yield queue.popleft().result()
    if error is not None:
        raise error


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
    """Embed every sample of `shards` into `out`; resumes a previous partial run of the same job.

    Holds `out`'s lock (per rank under torchrun) for the whole run: `LockHeld` at once when
    another run has it, `NotADirectoryError` when `out` is a file. Raises `DamagedInput` before
    writing anything when a local shard is damaged, `EmbedError` for other bad input; returns
    the run's counts, with `damaged` when a shard broke while being read (a checkpoint was kept)
    and `stopped` when a stop signal ended it."""
    out = Path(out)
    with output_lock(out, rank_lock_name(), command="facesift embed"):
        if rank is None or world is None:
            rank, world = _ranks(cfg.device)
        urls, counts = _plan(shards)
        return _embed(urls, counts, out, cfg, progress, rank, world)


def _plan(shards: Any) -> tuple[list[str], list[int]]:
    """Shard URLs and counts that the rows will follow, checked before anything is written."""
    try:
        table = scan_counts(shards)
    except FileNotFoundError as exc:
        raise EmbedError(str(exc)) from None
    if table.damaged:
        for exc in table.damaged:
            log.warning("damaged shard %s: %s", exc.url, exc.reason)
        raise DamagedInput(table.damaged)
    if table.stale:
        raise EmbedError(f"the index is stale: {table.stale[0]}" + (f" (and {len(table.stale) - 1} more)"
                         if len(table.stale) > 1 else "") + "; re-run `facesift shards verify`")
    if sum(table.counts) == 0:
        raise EmbedError(f"no samples in {shards} ({len(table.urls)} shard(s), all empty): nothing to embed")
    return table.urls, table.counts


def _read_json(path: Path, what: str) -> dict:
    """A state file of an earlier run; a corrupt one is a clear error, not a traceback."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise EmbedError(f"{path}: unreadable {what} ({exc}): delete {path.parent} or use another --out") from None
    if not isinstance(data, dict):
        raise EmbedError(f"{path}: unreadable {what} (not an object): delete {path.parent} or use another --out")
    return data


def _existing(out: Path, job: dict) -> dict | None:
    """The result when `out` already holds this job complete; raises when it holds another job."""
    info_path = out / "info.json"
    if not info_path.exists():
        return None
    old = _read_json(info_path, "info.json")
    same = {k: old.get(k) for k in job} == job
    if not same:
        raise EmbedError(f"{out} holds the embeddings of a different job (other shards, counts or embedder): "
                         "use another --out or delete it")
    final = out / "embeddings.npy"
    if old.get("complete") and final.exists():
        _remove_state(out)  # stray state of an older run: the job is done
        log.info("%s: already complete (%d rows); nothing to do", out, job["rows"])
        return {**old, "embedded": 0, "resumed_from": job["rows"], "complete": True}
    if final.exists() and not (out / PART_EMB).exists() and (out / "meta.jsonl").exists():
        # killed between the final renames and the last info.json write: only that is left
        atomic_write_json(info_path, {**old, "complete": True})
        _remove_state(out)
        return {**old, "complete": True, "embedded": 0, "resumed_from": job["rows"]}
    return None


def _allocate(out: Path, job: dict, cfg: EmbedConfig) -> None:
    """Rank 0 of a fresh job: the preallocated memmaps and `info.json` (complete=false)."""
    if (out / "info.json").exists() and (out / PART_EMB).exists():
        return  # the same job's resume point
    _remove_state(out)
    n, dim = job["rows"], job["dim"]
    np.lib.format.open_memmap(out / PART_EMB, mode="w+", dtype=np.float16, shape=(n, dim)).flush()
    np.lib.format.open_memmap(out / PART_HASH, mode="w+", dtype=np.uint8, shape=(n, 2 * HASH_BYTES)).flush()
    atomic_write_json(out / "info.json", {**job, "complete": False, "config": _saved_config(cfg)})


def _saved_config(cfg: EmbedConfig) -> dict:
    """The config as info.json keeps it: enough to rebuild the embedder later (the redundancy
    stage's calibration embeds copies exactly as the rows were), so the backbone path is absolute."""
    saved = asdict(cfg)
    if cfg.backbone:
        saved["backbone"] = str(Path(cfg.backbone).resolve())
    return saved


def _remove_state(out: Path) -> None:
    """Delete the resume state (partial memmaps, row files, ledgers); outputs are left alone."""
    for pattern in (".*.partial", ".progress-*.json"):
        for p in out.glob(pattern):
            p.unlink(missing_ok=True)


def _discard_if_empty(out: Path) -> None:
    """A single-process run that stops before its first checkpoint leaves nothing behind: the
    preallocated state would hold no row, and an `info.json` saying complete=false would too."""
    ledger = out / ".progress-0-of-1.json"
    info_path = out / "info.json"
    if not (out / PART_EMB).exists():
        return
    try:
        done = int(json.loads(ledger.read_text())["done"]) if ledger.exists() else 0
        complete = bool(json.loads(info_path.read_text()).get("complete")) if info_path.exists() else False
    except (ValueError, OSError, KeyError, TypeError):
        return  # unreadable state is the next run's to report, not ours to delete
    if done == 0 and not complete:
        _remove_state(out)
        info_path.unlink(missing_ok=True)


def _embed(urls: list[str], counts: list[int], out: Path, cfg: EmbedConfig, progress: bool,
           rank: int, world: int) -> dict:
    """The run once its input is known good: resume or allocate, embed this rank's slice, finalise."""
    n = int(sum(counts))
    embedder = Embedder(cfg)
    job = {"shards": urls, "counts": counts, "rows": n, "dim": embedder.dim, "embedder": embedder.name,
           "hashes": bool(cfg.hashes)}
    done_before = _existing(out, job)
    if done_before is not None:
        return done_before
    try:
        if rank == 0:
            _allocate(out, job, cfg)
        _barrier(world)
        stale = [p.name for p in out.glob(".progress-*.json") if not p.name.endswith(f"-of-{world}.json")]
        if stale:
            raise EmbedError(f"{out}: a previous run used another number of processes ({stale[0]}); "
                             f"resume with the same world size or delete the directory")
        result = {**job, **_embed_slice(urls, counts, out, cfg, embedder, progress, rank, world),
                  "complete": False}
    finally:
        if world == 1:
            _discard_if_empty(out)  # every way out, exceptions and Ctrl-C included
    _barrier(world)
    if rank != 0:
        return result
    slices = [rank_slice(n, r, world) for r in range(world)]
    ledgers = [_ledger(out, r, world) for r in range(world)]
    if any(ledger["done"] < b - a for ledger, (a, b) in zip(ledgers, slices)):
        if not result.get("damaged") and not result.get("stopped"):
            log.info("stopped before the end; re-run the same command to continue")
        return result
    _finalise(out, job, cfg, world)
    result["complete"] = True
    return result


def _ledger(out: Path, rank: int, world: int) -> dict:
    """How far one rank got: rows done in its slice and the bytes of its row file they cover."""
    path = out / f".progress-{rank}-of-{world}.json"
    if not path.exists():
        return {"done": 0, "rows_bytes": 0}
    ledger = _read_json(path, "resume ledger")
    if not isinstance(ledger.get("done"), int) or not isinstance(ledger.get("rows_bytes"), int):
        raise EmbedError(f"{path}: unreadable resume ledger: delete {out} or use another --out")
    return ledger


def _embed_slice(urls: list[str], counts: list[int], out: Path, cfg: EmbedConfig, embedder: Embedder,
                 progress: bool, rank: int, world: int) -> dict:
    """Embed this rank's rows from its last checkpoint on; every way out of the loop that leaves
    the state consistent (end, --max-batches, a stop signal, a shard breaking) checkpoints."""
    from facesift.common.progress import progress as progress_bar
    n = int(sum(counts))
    start, stop = rank_slice(n, rank, world)
    ledger_path = out / f".progress-{rank}-of-{world}.json"
    rows_path = out / f".rows-{rank}-of-{world}.jsonl.partial"
    ledger = _ledger(out, rank, world)
    done = int(ledger["done"])
    with open(rows_path, "ab") as fh:
        fh.truncate(int(ledger["rows_bytes"]))
    try:
        emb = np.load(out / PART_EMB, mmap_mode="r+")
        hashes = np.load(out / PART_HASH, mmap_mode="r+")
    except (ValueError, OSError) as exc:
        raise EmbedError(f"{out}: unreadable resume state ({exc}): delete {out} or use another --out") from None
    if done:
        log.info("resuming rank %d at row %d of its %d", rank, done, stop - start)

    counts_out = {"embedded": 0, "errors": 0, "resumed_from": done}
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
    last_flush, batches = cursor, 0
    try:
        with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
            work = _ordered_map(pool, lambda b: [decode(s, embedder, cfg.hashes) for s in b],
                                _batches(_rows(urls, counts, cursor, stop), cfg.batch_size),
                                ahead=2 * max(1, cfg.workers))
            for decoded in work:
                rows, row_hashes, metas = _embed_batch(decoded, embedder)
                emb[cursor:cursor + len(decoded)] = rows
                hashes[cursor:cursor + len(decoded)] = row_hashes
                for offset, meta in enumerate(metas):
                    if "error" in meta:
                        counts_out["errors"] += 1
                        log.warning("row %s (%s): %s", cursor + offset, meta.get("key"), meta["error"])
                pending_rows.extend(metas)
                cursor += len(decoded)
                counts_out["embedded"] += len(decoded)
                batches += 1
                bar.update(len(decoded))
                if cursor - last_flush >= cfg.chunk_rows:
                    flush(cursor)
                    last_flush = cursor
                if cfg.max_batches is not None and batches >= cfg.max_batches:
                    break
                if requested():
                    counts_out["stopped"] = requested()
                    break
    except DamagedShard as exc:  # a shard broke while being read (remote shards are not pre-checked)
        log.warning("damaged shard %s: %s", exc.url, exc.reason)
        counts_out["damaged"] = [{"shard": exc.url, "reason": exc.reason, "samples": exc.samples}]
    except EmbedError:
        flush(cursor)            # rows up to `cursor` are whole: keep them for the re-run
        raise
    finally:
        bar.close()
    flush(cursor)
    return counts_out


def _embed_batch(decoded: list[tuple], embedder: Embedder) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Rows (float16), hashes and meta of one decoded batch; undecodable samples get zero rows."""
    ok = [i for i, (p, _, _) in enumerate(decoded) if p is not None]
    rows = np.zeros((len(decoded), embedder.dim), np.float32)
    if ok:
        rows[ok] = embedder([decoded[i][0] for i in ok])
    return rows.astype(np.float16), np.stack([h for _, h, _ in decoded]), [m for _, _, m in decoded]


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
    atomic_write_json(out / "info.json", {**job, "complete": True, "errors": errors, "config": _saved_config(cfg),
                                          "hash_layout": "hashes.npy[:, 0:8] pHash, [:, 8:16] dHash (packed bits)"})
    for p in list(out.glob(".rows-*.partial")) + list(out.glob(".progress-*.json")):
        p.unlink()


def load_embeddings(directory: str | Path) -> dict:
    """The outputs of a complete `embed` run: embeddings (memmap), hashes, keys, meta, info.

    Every file is checked against `info.json` (rows, dim) before it is used: a folder that was
    cut short, edited or copied half-way is one EmbedError naming the file, not a traceback, and
    never a silent misalignment of rows and keys."""
    directory = Path(directory)
    info_path = directory / "info.json"
    if not info_path.exists() or not (directory / "embeddings.npy").exists():
        raise EmbedError(f"{directory}: no complete embeddings (run `facesift embed --out {directory}` first)")
    info = _read_json(info_path, "info.json")
    if not info.get("complete") or not isinstance(info.get("rows"), int):
        raise EmbedError(f"{info_path}: the embedding run is not complete (re-run `facesift embed --out {directory}`)")
    rows = info["rows"]
    emb = _load_array(directory / "embeddings.npy", (rows, info.get("dim")))
    hashes = (_load_array(directory / "hashes.npy", (rows, 2 * HASH_BYTES))
              if (directory / "hashes.npy").exists() else None)
    meta = _read_meta(directory / "meta.jsonl", rows)
    return {"emb": emb, "hashes": hashes, "keys": [m["key"] for m in meta], "meta": meta, "info": info}


def _load_array(path: Path, shape: tuple) -> np.ndarray:
    """A memory-mapped `.npy` of the expected shape (a None dimension is not checked)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise EmbedError(f"{path}: unreadable ({exc}); re-run `facesift embed` into a fresh --out") from None
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        raise EmbedError(f"{path}: shape {array.shape} does not match info.json ({shape}); "
                         "re-run `facesift embed` into a fresh --out")
    return array


def _read_meta(path: Path, rows: int) -> list[dict]:
    """meta.jsonl: one JSON object with a `key` per row, exactly `rows` of them."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise EmbedError(f"{path}: unreadable ({exc}); re-run `facesift embed` into a fresh --out") from None
    meta = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or "key" not in row:
            raise EmbedError(f"{path}:{n}: not a metadata row (the file is cut off or corrupt); "
                             "re-run `facesift embed` into a fresh --out")
        meta.append(row)
    if len(meta) != rows:
        raise EmbedError(f"{path}: {len(meta)} rows, info.json says {rows}; re-run `facesift embed` into a fresh --out")
    return meta
