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

Before any work: every option is checked (config.check_config: a bad value exits 2 and marks
nothing), the source must exist, `--out` must be (or become) a directory, and the run takes the
output directory's lock (common/lock.py; `.facesift.lock`, or `.facesift.lock.partK` for
`--part K/N`, so the parts of one job share a folder): a second curate on the same output stops
at once naming the first one's pid, and the kernel drops the lock whatever way a run ends.

The parts: worklist.py (which photos), recovery.py (after a crash), samples.py (one photo's
samples), sink.py (the writer thread), counts.py (what the run did); this module runs them.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from facesift.common.config import save_config
from facesift.common.lock import LOCK_NAME, output_lock
from facesift.common.progress import progress as progress_bar
from facesift.common.stopping import StopRequested, requested
from facesift.common.runtime import parse_part
from facesift.curate.config import CurateConfig, check_config
from facesift.curate.counts import RunCounts
from facesift.curate.download import Fetched, download
from facesift.curate.download_processes import auto_processes, download_in_processes
from facesift.curate.reasons import DUPLICATE
from facesift.curate.recovery import reconcile
from facesift.curate.samples import face_samples, whole_image_samples
from facesift.curate.sink import Sink
from facesift.curate.sources import check_source, open_source
from facesift.curate.worklist import in_part, known_hashes, requeue_failed, work_rows
from facesift.shards.writer import ShardWriter, part_prefix, part_suffix

log = logging.getLogger(__name__)


def _batches(fetched: Iterator[Fetched], sink: Sink, seen: dict[str, str], batch: int,
             dedupe: bool, counts: RunCounts) -> Iterator[list[Fetched]]:
    """Failures and duplicates go straight to the sink; decoded images are grouped for the detector."""
    pending: list[Fetched] = []
    for f in fetched:
        pid = str(f.row["id"])
        counts.bytes += f.nbytes
        if f.error is not None:
            sink.put(("status", (pid, "failed", f.error[:500], f.sha256, None, f.reason)))
            continue
        if dedupe and f.sha256 in seen and seen[f.sha256] != pid:
            sink.put(("status", (pid, "skipped", f"exact duplicate of {seen[f.sha256]}", f.sha256, None,
                                 DUPLICATE)))
            continue
        seen.setdefault(f.sha256, pid)
        pending.append(f)
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending


def prepare_out(out: Path) -> None:
    """`--out` is a directory, or one is made: a file there (or under it) is a clear error."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot create the directory: {exc.strerror or exc}") from None


def lock_name(part: tuple[int, int] | None) -> str:
    """The lock file of a run: one per output directory, one per part for `--part K/N`."""
    return LOCK_NAME if part is None else f"{LOCK_NAME}.part{part[0]}"


def run_curate(cfg: CurateConfig, progress: bool = True) -> RunCounts:
    """Curate every pending photo of the configured source (or part) into shards under `cfg.out`.

    Raises ValueError / FileNotFoundError for a bad option or source and `LockHeld` (a
    RuntimeError) when another run holds the output, all before any work (the CLI exits 2).
    """
    check_config(cfg)
    check_source(cfg)
    part = parse_part(cfg.part)
    out = Path(cfg.out)
    prepare_out(out)
    with output_lock(out, name=lock_name(part)):
        return _run_locked(cfg, part, out, progress)


def _run_locked(cfg: CurateConfig, part: tuple[int, int] | None, out: Path, progress: bool) -> RunCounts:
    from facesift.curate.catalog import Catalog
    from facesift.curate.detect import build_detector, close_detector

    part_text = f"{part[0]}/{part[1]}" if part else None
    suffix = part_suffix(part)
    save_config(cfg, out / f"curate-config{suffix}.yaml")
    catalog_path = open_source(cfg)
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
                    "reasons": catalog.reason_counts(), "last_run": counts.last_run(),
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
        bar = progress_bar(total=len(rows), unit="photo", desc="curate", disable=not progress or not rows,
                           smoothing=0.05)
        done_before = 0
        encoders = cf.ThreadPoolExecutor(cfg.align.workers or min(4, os.cpu_count() or 1),
                                         thread_name_prefix="encode")
        # --detector none: crop, hashes and JPEG encode run on the download thread that decoded the
        # photo (no detector batch to wait for, no array copy, no second thread hop)
        post = functools.partial(whole_image_samples, cfg=cfg) if detector_name == "none" else None
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

        processes = auto_processes(cfg.download, len(rows)) if post is not None else 1
        if processes > 1:
            log.info("curate: downloading in %d processes", processes)
        stream = download_in_processes(rows, fetch_cfg, post, processes) if processes > 1 else \
            download(rows, fetch_cfg, post=post)
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
