"""The sink thread: writes shards in input order and owns every catalog write of a curate run.

The main thread hands it, in input order, a status to record (a failed download, a duplicate),
a detector batch (a future resolving to one encode future per photo), or a photo processed on
its download thread (`--detector none`). The sink writes each photo's samples as one group
(`ShardWriter.write_group`) and marks the photo done in the writer's commit callback, after its
shard is renamed complete; photos with no accepted face are recorded when seen, in batches of
`STATUS_FLUSH`. An error here (or in a detector it waits on) stops the run: the main thread
raises `failure()`.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import queue
import threading

from facesift.curate.config import CurateConfig
from facesift.curate.counts import RunCounts
from facesift.curate.download import Fetched
from facesift.curate.reasons import PROCESSING, checked
from facesift.shards.writer import ShardWriter

log = logging.getLogger(__name__)

STATUS_FLUSH = 256  # buffered no_face/failed/skipped statuses written per transaction


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
               rejected: dict | None = None, reason: str | None = None) -> None:
        """Buffer one photo's outcome; a failure or skip is counted under its reason."""
        reason = checked(reason, error) if error and status in ("failed", "skipped") else None
        self.statuses.append((pid, status, error, sha, rejected, reason))
        self.counts.photos[status] += 1
        if reason:
            self.counts.reasons[status][reason] += 1
        if len(self.statuses) >= STATUS_FLUSH:
            self.flush()

    def _record(self, updates: list[tuple]) -> None:
        """Catalog write; the per-filter counts go with the statuses, so stats.json's totals
        (catalog at start + what was recorded since) never count a re-processed photo twice."""
        self.catalog.set_status_many(updates)
        for update in updates:
            self.counts.rejected_recorded.update(update[4] or {})

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
            self.status(pid, "failed", f"processing error: {type(exc).__name__}: {exc}"[:500], fetched.sha256,
                        None, PROCESSING)
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
