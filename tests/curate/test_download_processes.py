"""download_in_processes: the whole-image path split over processes, in order, politely."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesift.curate.config import DownloadConfig
from facesift.curate.download_processes import PROCESS_MIN_PHOTOS, auto_processes, child_config, download_in_processes


def _size_of(fetched, image):
    """A post step (module level, so a spawned child can import it): the photo's size and pid."""
    if fetched.row["id"] == "die":
        os._exit(3)    # a child killed mid-run
    if fetched.row["id"] == "odd":
        raise _Unpicklable()
    return image.size, os.getpid()


class _Unpicklable(Exception):
    def __init__(self):
        super().__init__("a lambda inside")
        self.hook = lambda: None    # pickle refuses lambdas


def _rows(tmp_path: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((40 + i, 50, 3), i, np.uint8)).save(p)
        rows.append({"id": str(i), "url": str(p)})
    return rows


def test_results_come_back_in_order_from_every_process(tmp_path):
    rows = _rows(tmp_path, 20)
    got = list(download_in_processes(rows, DownloadConfig(workers=4), _size_of, 2))
    assert [f.row["id"] for f in got] == [r["id"] for r in rows]
    assert [f.processed[0] for f in got] == [(50, 40 + i) for i in range(20)]
    pids = {f.processed[1] for f in got}   # which child takes which chunk is the scheduler's choice
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert all(f.sha256 and f.nbytes and f.image is None for f in got)


def test_an_exception_that_cannot_be_pickled_becomes_a_named_error(tmp_path):
    rows = _rows(tmp_path, 3) + [{"id": "odd", "url": str(tmp_path / "0.png")}]
    got = list(download_in_processes(rows, DownloadConfig(workers=2), _size_of, 2))
    assert isinstance(got[-1].processed, RuntimeError)
    assert str(got[-1].processed) == "_Unpicklable: a lambda inside"
    assert all(isinstance(f.processed, tuple) for f in got[:-1])


def test_a_dead_process_stops_the_run_with_a_clear_error(tmp_path):
    rows = _rows(tmp_path, 4) + [{"id": "die", "url": str(tmp_path / "0.png")}] + _rows(tmp_path, 4)
    with pytest.raises(RuntimeError, match="download process died.*re-run"):
        list(download_in_processes(rows, DownloadConfig(workers=2), _size_of, 2))


def test_the_processes_share_the_politeness_limits():
    cfg = DownloadConfig(workers=16, per_host=8, cpu_slots=4)
    per = child_config(cfg, 3)
    assert (per.workers, per.per_host, per.cpu_slots) == (6, 2, 1)
    assert child_config(DownloadConfig(per_host=1), 4).per_host == 1   # never zero
    assert auto_processes(DownloadConfig(processes=3), 5) == 3
    assert auto_processes(DownloadConfig(), PROCESS_MIN_PHOTOS - 1) == 1
    assert auto_processes(DownloadConfig(), PROCESS_MIN_PHOTOS) == min(os.cpu_count() or 1, 8)
    # more processes than per_host would hold more connections to one host than it allows
    assert auto_processes(DownloadConfig(processes=12, per_host=4), 5) == 4
    assert auto_processes(DownloadConfig(processes=12, per_host=64, workers=6), 5) == 6
