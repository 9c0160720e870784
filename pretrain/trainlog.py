"""A pretraining run's metrics: OUT/metrics.csv, TensorBoard events in OUT/tb/, a progress bar.

Rank 0 writes them every `log_every` steps (and at the last step); other ranks keep a
`TrainLog` that does nothing, so the loop needs no rank checks. A resumed run first drops the
rows logged after its checkpoint (they are logged again) and purges the same TensorBoard
steps, so neither shows a step twice. Throughput and data wait are measured over the window
since the previous row: `data_wait` is the share of it the trainer spent blocked on the loader.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from facesift.pretrain.swav import SwAVStats
from facesift.common.atomic import atomic_write_text
from facesift.common.progress import progress

log = logging.getLogger("facesift.pretrain")
CSV_FIELDS = ["step", "epoch", "loss", "lr", "images_per_s", "data_wait", "entropy",
              "prototypes_used", "max_share", "bad_samples"]


def trim_csv(path: Path, last_step: int) -> None:
    """On resume, drop rows logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    with path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= last_step]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class TrainLog:
    """The open CSV file, TensorBoard writer and bar of one run, and the current timing window."""

    def __init__(self, out: Path, step: int, stop_step: int, global_batch: int, log_every: int,
                 enabled: bool):
        self.stop_step, self.global_batch, self.log_every, self.enabled = stop_step, global_batch, log_every, enabled
        self.csv_fh: io.TextIOBase | None = None
        self.tb: Any = None
        self.bar: Any = None
        if enabled:
            self._open(out, step)
        self.t_window, self.wait_window, self.n_window = time.perf_counter(), 0.0, 0

    def _open(self, out: Path, step: int) -> None:
        csv_path = out / "metrics.csv"
        if step:
            trim_csv(csv_path, step)
        new_csv = not csv_path.exists() or step == 0
        self.csv_fh = csv_path.open("w" if new_csv else "a", newline="")
        self.csv_writer = csv.DictWriter(self.csv_fh, fieldnames=CSV_FIELDS)
        if new_csv:
            self.csv_writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"), purge_step=step or None)
        except ImportError:  # tensorboard is a dependency, but logging must never stop a run
            log.warning("tensorboard not importable: CSV logs only")
        self.bar = progress(total=self.stop_step, initial=step, desc="pretrain", unit="step",
                            dynamic_ncols=True, disable=None)

    def timed(self, batches: Iterable[dict]) -> Iterator[dict]:
        """The batches, adding the time spent waiting for each to the window's data wait."""
        it = iter(batches)
        while True:
            t_wait = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait_window += time.perf_counter() - t_wait
            yield batch

    def step_done(self, step: int, epoch: int, lr: float, stats: SwAVStats, bad_samples: int) -> None:
        """Count the step; on a logging step write its row and start a new window."""
        self.n_window += 1
        if not self.enabled:
            return
        if step % self.log_every == 0 or step == self.stop_step:
            elapsed = max(time.perf_counter() - self.t_window, 1e-9)
            row = {"step": step, "epoch": epoch, "loss": round(stats.loss, 5), "lr": lr,
                   "images_per_s": round(self.n_window * self.global_batch / elapsed, 2),
                   "data_wait": round(self.wait_window / elapsed, 4),
                   "entropy": round(stats.entropy, 5), "prototypes_used": stats.prototypes_used,
                   "max_share": round(stats.max_share, 4), "bad_samples": bad_samples}
            self.csv_writer.writerow(row)
            self.csv_fh.flush()
            if self.tb:
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        self.tb.add_scalar(f"pretrain/{k}", v, step)
            # no refresh here: without a terminal the bar prints at most one line per interval
            self.bar.set_postfix(loss=f"{stats.loss:.3f}", ent=f"{stats.entropy:.2f}",
                                 protos=stats.prototypes_used, ips=row["images_per_s"], refresh=False)
            self.t_window, self.wait_window, self.n_window = time.perf_counter(), 0.0, 0
        self.bar.update(1)

    def close(self) -> None:
        for thing in (self.bar, self.tb, self.csv_fh):
            if thing is not None:
                thing.close()
