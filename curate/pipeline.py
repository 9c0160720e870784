"""`curate` orchestration: pending photos → download → detect → filter/align → shards.

The stages overlap so the detector is the only thing the run waits on:

    download threads (fetch + decode, ordered, bounded)  ─►  main thread: dedupe, batch  ─►
    detector workers (batches side by side)  ─►  encode threads (filter, align, jpeg, hashes)
    ─►  bounded queue of futures  ─►  sink thread: write shards in input order, catalog statuses

With `--detector none` there is nothing to batch for: each download thread crops, measures
(sharpness, pHash, dHash; `filter.measures=false` skips them) and JPEG-encodes the photo it has
just decoded, and the main thread only dedupes and forwards the finished samples to the sink.

Exactly-once: a photo becomes `done` only in the shard writer's commit callback (after its
shard is renamed); photos with no accepted face, failures and duplicates are recorded when seen
(nothing is lost by redoing them). On start, the shards that may hold un-acknowledged photos
are read back and those photos marked done (a kill between rename and catalog update).
`--part K/N` keeps the photos whose id hashes into slice K and writes its own shard range.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import functools
import io
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image

from facesift.curate.align import align_face, resize_center_crop
from facesift.curate.config import CurateConfig, parse_part
from facesift.curate.download import Fetched, download
from facesift.curate.filters import crop_measures, estimate_yaw, interocular, select_faces, sharp_enough
from facesift.curate.sources import license_url, open_source
from facesift.shards.format import make_key
from facesift.shards.split import key_score
from facesift.shards.writer import ShardWriter, part_prefix, part_suffix
from facesift.common.config import save_config
from facesift.common.stopping import StopRequested, requested

log = logging.getLogger(__name__)

STATUS_FLUSH = 256  # buffered no_face/failed/skipped statuses written per transaction


@dataclass
class RunCounts:
    """What happened in this run (the summary line and stats.json)."""
    photos: collections.Counter = field(default_factory=collections.Counter)   # by status
    rejected: collections.Counter = field(default_factory=collections.Counter)  # faces, by filter
    rejected_recorded: collections.Counter = field(default_factory=collections.Counter)  # ... now in the catalog
    faces: int = 0
    recovered: int = 0
    bytes: int = 0
    detect_s: float = 0.0       # summed over detector workers
    detect_workers: int = 0
    detect_loop_s: float = 0.0  # first batch handed to a detector → last detection finished
    input_wait_s: float = 0.0   # the main thread waiting for decoded photos (downloads too slow)

    def detector_busy(self) -> float | None:
        """Share of the detection loop the detector workers spent detecting rather than waiting
        for photos: near 1 means the run is detector-bound, as it should be."""
        span = self.detect_workers * self.detect_loop_s
        return round(min(1.0, self.detect_s / span), 4) if span > 0 else None


def in_part(photo_id: str, part: tuple[int, int] | None, seed: int = 0) -> bool:
    """Deterministic slice membership by photo-id hash."""
    if part is None:
        return True
    k, n = part
    return int(key_score(str(photo_id), seed) * n) == k


def photos_in_shard(path: Path) -> dict[str, str | None]:
    """{photo_id: sha256} of the faces stored in one shard (from the json members)."""
    from facesift.shards.reader import iter_samples  # webdataset imports torch: only load it when recovering

    out: dict[str, str | None] = {}
    for sample in iter_samples(str(path), extensions={"json"}):
        meta = json.loads(sample["json"])
        out[str(meta["photo_id"])] = meta.get("sha256")
    return out


def known_hashes(catalog_path: Path) -> dict[str, str]:
    """sha256 → photo id of photos already curated (done or no_face), for exact-duplicate skips."""
    con = sqlite3.connect(f"{Path(catalog_path).resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        rows = con.execute("SELECT sha256, id FROM photos WHERE sha256 IS NOT NULL "
                           "AND status IN ('done', 'no_face') ORDER BY id").fetchall()
    finally:
        con.close()
    out: dict[str, str] = {}
    for sha, pid in rows:
        out.setdefault(sha, pid)
    return out


def reconcile(writer: ShardWriter, catalog) -> int:
    """Mark done the photos found in complete shards whose catalog row is still pending."""
    updates = []
    for shard in writer.recover():
        for pid, sha in photos_in_shard(shard).items():
            row = catalog.get(pid)
            if row is not None and row["status"] == "pending":
                updates.append((pid, "done", None, sha))
    if updates:
        catalog.set_status_many(updates)
        log.info("recovered %d photos from shards completed by an interrupted run", len(updates))
    return len(updates)


# ---- per photo ---------------------------------------------------------------------------------

def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _provenance(row: dict, fetched: Fetched) -> dict:
    return {
        "photo_id": str(row["id"]), "source": row.get("source") or "flickr",
        "license": row.get("license"), "license_url": license_url(row.get("license")),
        "owner": row.get("owner"), "ownername": row.get("ownername"), "title": row.get("title"),
        "query": row.get("query"), "url": row.get("url"), "sha256": fetched.sha256,
    }


def face_samples(fetched: Fetched, dets, cfg: CurateConfig, detector_name: str,
                 image: Image.Image | None = None) -> tuple[list[dict], collections.Counter]:
    """The shard samples (key, jpg, json) of one photo ([] when no face passes the filters) and
    the per-filter rejection counts. Pure: runs on the encode pool, or (`--detector none`, given
    the decoded PIL `image`) on the download thread that fetched the photo."""
    rejected: collections.Counter = collections.Counter()
    # alignment reads the decoded array directly (only each face's region): no PIL copy of the photo
    w, h = image.size if image is not None else (fetched.image.shape[1], fetched.image.shape[0])
    if fetched.source_size:
        w, h = fetched.source_size  # the size the photo has, even when decoded at reduced scale
    base = _provenance(fetched.row, fetched)
    size = cfg.align.crop_size
    crops: list[tuple[Image.Image, dict]] = []
    if dets is None:  # --detector none: the whole image
        crop = resize_center_crop(image if image is not None else Image.fromarray(fetched.image), size)
        crops.append((crop, {"bbox": [0.0, 0.0, float(w), float(h)], "landmarks": None, "score": None,
                             "yaw": None, "interocular": None}))
    else:
        yaws, iods = estimate_yaw(dets.landmarks), interocular(dets.landmarks)
        for i in select_faces(dets, cfg.filter, rejected):
            crop, _ = align_face(fetched.image if image is None else image, dets.landmarks[i], cfg.align)
            crops.append((crop, {
                "bbox": [round(float(v), 2) for v in dets.boxes[i]],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in dets.landmarks[i]],
                "score": round(float(dets.scores[i]), 5), "yaw": round(float(yaws[i]), 2),
                "interocular": round(float(iods[i]), 2)}))
    measure = dets is not None or cfg.filter.measures  # whole images may skip them (filter.measures)
    samples = []
    for crop, geo in crops:
        if measure:
            sharp, phash, dhash = crop_measures(crop)
            if dets is not None and not sharp_enough(sharp, cfg.filter, rejected):
                continue
            measures = {"phash": phash, "dhash": dhash, "sharpness": round(sharp, 3)}
        else:
            measures = {"phash": None, "dhash": None, "sharpness": None}
        index = len(samples)
        meta = {**base, "face_index": index, **geo, "source_size": [w, h], "detector": detector_name,
                "crop_size": size, **measures}
        samples.append({"__key__": make_key(base["photo_id"], index),
                        "jpg": encode_jpeg(crop, cfg.align.jpeg_quality), "json": meta})
    return samples, rejected


def _whole_image_samples(fetched: Fetched, image: Image.Image, cfg: CurateConfig):
    return face_samples(fetched, None, cfg, "none", image=image)


# ---- the sink thread ---------------------------------------------------------------------------

class Sink(threading.Thread):
    """Writes shards in input order (crops come from the encode pool as futures) and owns every
    catalog write of the run."""

    def __init__(self, cfg: CurateConfig, writer: ShardWriter, catalog, counts: RunCounts,
                 detector_name: str, maxsize: int):
        super().__init__(name="curate-sink", daemon=True)
        self.cfg, self.writer, self.catalog, self.counts = cfg, writer, catalog, counts
        self.detector_name = detector_name
        self.inbox: queue.Queue = queue.Queue(maxsize=maxsize)
        self.statuses: list[tuple] = []
        self.error: BaseException | None = None
        self.processed = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()  # no more input: finish what is queued, then end

    def status(self, pid: str, status: str, error: str | None, sha: str | None,
               rejected: dict | None = None) -> None:
        self.statuses.append((pid, status, error, sha, rejected))
        self.counts.photos[status] += 1
        if len(self.statuses) >= STATUS_FLUSH:
            self.flush()

    def _record(self, updates: list[tuple]) -> None:
        """Catalog write; the per-filter counts go with the statuses, so stats.json's totals
        (catalog at start + what was recorded since) never count a re-processed photo twice."""
        self.catalog.set_status_many(updates)
        for *_, rejected in updates:
            self.counts.rejected_recorded.update(rejected or {})

    def flush(self) -> None:
        if self.statuses:
            self._record(self.statuses)
            self.statuses = []

    def on_commit(self, groups: list[tuple[str, str | None, dict]]) -> None:
        self.flush()
        self._record([(pid, "done", None, sha, rejected) for pid, sha, rejected in groups])

    def photo(self, fetched: Fetched, outcome) -> None:
        """Write one photo's samples, or record why it has none; `outcome` is (samples, rejected),
        a future of it, or the exception that stopped it."""
        pid = str(fetched.row["id"])
        try:
            if isinstance(outcome, cf.Future):
                outcome = outcome.result()
            if isinstance(outcome, Exception):
                raise outcome
            samples, rejected = outcome
        except Exception as exc:  # one odd photo (degenerate landmarks ...) is a counted skip
            log.warning("photo %s: %s: %s", pid, type(exc).__name__, exc)
            self.status(pid, "failed", f"processing error: {type(exc).__name__}: {exc}"[:500], fetched.sha256)
            return
        self.counts.rejected.update(rejected)
        if samples:
            self.writer.write_group(samples, meta=(pid, fetched.sha256, dict(rejected)))
            self.counts.faces += len(samples)
            self.counts.photos["done"] += 1
        else:
            self.status(pid, "no_face", "no face passed the detector and filters", fetched.sha256,
                        dict(rejected))

    def run(self) -> None:
        try:
            while True:
                try:
                    item = self.inbox.get(timeout=0.5)
                except queue.Empty:
                    if self.stop.is_set():
                        break
                    continue
                if item is None:
                    break
                kind, payload = item
                if kind == "status":
                    self.status(*payload)
                    done = 1
                elif kind == "batch":  # a detector future resolving to one encode future per photo
                    batch, detected, slot = payload
                    # a detector error (CUDA out of memory, a broken model) stops the run like any
                    # writer error: the open shard is dropped and its photos stay pending
                    outcomes = detected.result()
                    for fetched, outcome in zip(batch, outcomes):
                        self.photo(fetched, outcome)
                    slot.release()
                    done = len(batch)
                else:  # "processed": done on the fetch thread (--detector none)
                    self.photo(*payload)
                    done = 1
                with self.lock:
                    self.processed += done
            self.flush()
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc
            while not self.stop.is_set():  # keep draining so the producer never blocks on a dead consumer
                try:
                    if self.inbox.get(timeout=0.5) is None:
                        break
                except queue.Empty:
                    continue

    def failure(self) -> RuntimeError:
        """The error that stopped the writer thread (or a detector it was waiting on), for the
        main thread to raise: the message names the cause, which the CLI prints."""
        err = RuntimeError(f"curate writer thread failed: {type(self.error).__name__}: {self.error}")
        err.__cause__ = self.error
        return err

    def put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.failure()
            try:
                self.inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


# ---- the run -----------------------------------------------------------------------------------

def requeue_failed(catalog, part: tuple[int, int] | None, seed: int) -> int:
    """`--retry-failed`: put this part's failed photos (timeouts, 5xx ...) back to pending."""
    failed = [r["id"] for r in catalog.all_photos()
              if r["status"] == "failed" and in_part(str(r["id"]), part, seed)]
    if failed:
        catalog.set_status_many([(pid, "pending", None, None) for pid in failed])
    return len(failed)


def work_rows(catalog, part: tuple[int, int] | None, seed: int, limit: int) -> list[dict]:
    rows = [r for r in catalog.pending() if in_part(str(r["id"]), part, seed)]
    return rows[:limit] if limit else rows


def _batches(fetched: Iterator[Fetched], sink: Sink, seen: dict[str, str], batch: int,
             dedupe: bool, counts: RunCounts) -> Iterator[list[Fetched]]:
    """Failures and duplicates go straight to the sink; decoded images are grouped for the detector."""
    pending: list[Fetched] = []
    for f in fetched:
        pid = str(f.row["id"])
        counts.bytes += f.nbytes
        if f.error is not None:
            sink.put(("status", (pid, "failed", f.error[:500], f.sha256)))
            continue
        if dedupe and f.sha256 in seen and seen[f.sha256] != pid:
            sink.put(("status", (pid, "skipped", f"exact duplicate of {seen[f.sha256]}", f.sha256)))
            continue
        seen.setdefault(f.sha256, pid)
        pending.append(f)
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def run_curate(cfg: CurateConfig, progress: bool = True) -> RunCounts:
    """Curate every pending photo of the configured source (or part) into shards under `cfg.out`."""
    from tqdm import tqdm

    from facesift.curate.catalog import Catalog
    from facesift.curate.detect import build_detector, close_detector

    part = parse_part(cfg.part)
    part_text = f"{part[0]}/{part[1]}" if part else None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = part_suffix(part)
    save_config(cfg, out / f"curate-config{suffix}.yaml")
    catalog_path = open_source(cfg)
    if cfg.detect.backend not in ("mtcnn", "scrfd", "none"):
        raise ValueError(f"unknown detector {cfg.detect.backend!r}: choose mtcnn, scrfd or none")
    detector_name = cfg.detect.backend
    fetch_cfg = cfg.download
    if detector_name == "none" and not fetch_cfg.draft:  # whole images: decode JPEGs at ≈ output scale
        fetch_cfg = dataclasses.replace(fetch_cfg, draft=cfg.align.crop_size)
    counts = RunCounts()
    stats_path = out / f"stats{suffix}.json"
    with Catalog(catalog_path) as catalog:
        # this part's rejects already in the catalog; what this run records is added as it goes
        recorded_before = catalog.rejected_totals(None if part is None else
                                                  lambda pid: in_part(pid, part, cfg.part_seed))

        def stats() -> dict:
            totals = recorded_before + counts.rejected_recorded
            return {"catalog": str(catalog_path), "part": part_text, "detector": detector_name,
                    "crop_size": cfg.align.crop_size,
                    "faces_total": sum(int(e.get("nsamples") or 0) for e in writer.shardlist),
                    "rejected_total": dict(sorted(totals.items())), "photos_by_status": catalog.counts_by("status"),
                    "last_run": {"detect_s": round(counts.detect_s, 3), "detect_workers": counts.detect_workers,
                                 "detect_loop_s": round(counts.detect_loop_s, 3),
                                 "input_wait_s": round(counts.input_wait_s, 3),
                                 "detector_busy": counts.detector_busy()},
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        writer = ShardWriter(out, prefix=part_prefix(part), index_name=f"index{suffix}.json",
                             stats_name=stats_path.name, maxcount=cfg.shards.maxcount,
                             maxsize=cfg.shards.maxsize, mtime=cfg.shards.mtime, stats=stats,
                             index_extra={"part": part_text} if part else None)
        counts.recovered = reconcile(writer, catalog)
        if cfg.retry_failed:
            log.info("retrying %d failed photos", requeue_failed(catalog, part, cfg.part_seed))
        rows = work_rows(catalog, part, cfg.part_seed, cfg.limit)
        seen = known_hashes(catalog_path) if cfg.download.dedupe else {}
        # built after the work list so an up-to-date re-run skips loading torch and the model;
        # still before any download, so a missing model / package fails fast
        detector = build_detector(cfg.detect) if rows or detector_name == "scrfd" else None
        log.info("curate: %d pending photos%s → %s (detector %s)", len(rows),
                 f" in part {part_text}" if part else "", out, detector_name)
        workers = detector.workers if detector is not None else 0
        sink = Sink(cfg, writer, catalog, counts, detector_name, maxsize=max(4, 2 * cfg.detect.batch_size))
        writer.on_commit = sink.on_commit
        sink.start()
        bar = tqdm(total=len(rows), unit="photo", desc="curate", disable=not progress or not rows, smoothing=0.05)
        done_before = 0
        encoders = cf.ThreadPoolExecutor(cfg.align.workers or min(4, os.cpu_count() or 1),
                                         thread_name_prefix="encode")
        # --detector none: crop, hashes and JPEG encode run on the download thread that decoded the
        # photo (no detector batch to wait for, no array copy, no second thread hop)
        post = functools.partial(_whole_image_samples, cfg=cfg) if detector_name == "none" else None
        # detector workers run batches side by side; each hands its photos to the encode pool.
        # At most 2 batches per worker are in flight (decoded photos are the memory that counts).
        detectors = cf.ThreadPoolExecutor(max(1, workers), thread_name_prefix="detect")
        slots = threading.BoundedSemaphore(2 * max(1, workers))
        timing = threading.Lock()
        loop: dict[str, float] = {}

        def detect_batch(batch: list[Fetched]) -> list[cf.Future]:
            start = time.perf_counter()
            dets = detector.detect([f.image for f in batch])
            end = time.perf_counter()
            with timing:
                counts.detect_s += end - start
                loop["end"] = max(loop.get("end", end), end)
            return [encoders.submit(face_samples, f, d, cfg, detector_name) for f, d in zip(batch, dets)]

        stream = download(rows, fetch_cfg, post=post)
        try:
            tick = time.perf_counter()
            for batch in _batches(stream, sink, seen, cfg.detect.batch_size, cfg.download.dedupe, counts):
                stop = requested()  # SIGTERM / Ctrl-C under the CLI: this batch stays pending
                if stop:
                    raise StopRequested(stop)
                if post is not None:
                    for f in batch:
                        sink.put(("processed", (f, f.processed)))
                else:
                    counts.input_wait_s += time.perf_counter() - tick
                    while not slots.acquire(timeout=0.5):
                        if sink.error is not None:
                            raise sink.failure()
                    loop.setdefault("start", time.perf_counter())
                    if workers > 1:
                        detected = detectors.submit(detect_batch, batch)
                    else:  # torch's intra-op threads run ~1.8× slower called from a non-main thread
                        detected = cf.Future()
                        detected.set_result(detect_batch(batch))
                    sink.put(("batch", (batch, detected, slots)))
                with sink.lock:
                    now = sink.processed
                bar.update(now - done_before)
                done_before = now
                bar.set_postfix(faces=counts.faces, refresh=False)
                tick = time.perf_counter()
            if post is None:  # every batch is in: let the detector's process (if any) wind down meanwhile
                detectors.shutdown(wait=True)
                close_detector(detector)
            sink.put(None)
            sink.join()
            if sink.error is not None:
                raise sink.failure()
            if "start" in loop:
                counts.detect_workers, counts.detect_loop_s = workers, loop["end"] - loop["start"]
            writer.close()
            sink.flush()
            writer.write_stats()
        except BaseException:
            sink.stop.set()
            sink.join(timeout=60)
            if sink.error is None and not sink.is_alive():
                # interrupted (Ctrl-C ...) between groups: the open shard holds only whole photos
                writer.close()
                sink.flush()
            else:
                writer.abort()  # the open shard's photos stay pending: redone on the next run
            raise
        else:
            bar.update(len(rows) - done_before)
        finally:
            stream.close()  # stop the download threads' queue (no-op once exhausted)
            detectors.shutdown(wait=False, cancel_futures=True)
            encoders.shutdown(wait=False, cancel_futures=True)
            close_detector(detector)
            bar.close()
    return counts
