"""What stops a curate before any work (issue 12): option ranges (defect 6), `--out` that is a file,
and the output lock (defect 11): a second run exits 2 naming the first, parts share a folder,
the lock is released on every exit path and a killed run's lock is taken over."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesift.cli import main
from facesift.common.lock import LOCK_NAME, output_lock
from facesift.curate.catalog import Catalog
from facesift.curate.config import AlignConfig, CurateConfig, DetectConfig, DownloadConfig, check_config
from facesift.curate.pipeline import run_curate
from facesift.shards.index import shard_urls
from facesift.shards.reader import iter_keys

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _folder(path: Path, n: int = 6, size: int = 40) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + i, 3), dtype=np.uint8)).save(path / f"{i:04d}.png")
    return path


def _cli(src: Path, out: Path, *extra: str) -> list[str]:
    return ["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none", "--crop-size", "32",
            "--no-progress", *extra]


def _statuses(out: Path) -> dict[str, int]:
    with Catalog(out / "sources.sqlite") as cat:
        return cat.counts_by("status")


def _keys(out: Path) -> list[str]:
    return [k for url in shard_urls(out) for k in iter_keys(url)]


# ---- ranges (defect 6) -----------------------------------------------------------------------

BAD = [
    ["--crop-size", "0"], ["--crop-size", "-5"], ["--batch-size", "0"], ["--workers", "0"],
    ["--min-interocular", "-1"], ["--limit", "-1"], ["--maxcount", "0"], ["--maxsize", "0"],
    ["--set", "align.jpeg_quality=0"], ["--set", "align.jpeg_quality=101"], ["--set", "align.eye_distance=0"],
    ["--set", "align.eye_y=1.5"], ["--set", "filter.min_score=1.5"], ["--set", "filter.max_yaw=91"],
    ["--set", "filter.max_faces=-1"], ["--set", "filter.min_sharpness=nan"], ["--set", "detect.min_score=-0.1"],
    ["--set", "detect.min_face_px=0"], ["--set", "detect.max_side=0"], ["--set", "detect.workers=-1"],
    ["--set", "detect.scrfd_input=0"], ["--set", "download.timeout=0"], ["--set", "download.retries=-1"],
    ["--set", "download.per_host=0"], ["--set", "download.max_bytes=0"], ["--set", "download.max_pixels=0"],
    ["--set", "download.min_side=0"], ["--set", "download.backoff=-1"], ["--set", "download.cpu_slots=-1"],
    ["--set", "align.workers=-2"], ["--set", "shards.mtime=-1"], ["--set", "detect.pad=diagonal"],
    ["--set", "detect.isolate=maybe"], ["--set", "detect.device=gpu"], ["--detector", "none", "--part", "3/2"],
]


@pytest.mark.parametrize("bad", BAD, ids=[" ".join(b) for b in BAD])
def test_a_bad_value_exits_2_before_any_work(tmp_path, bad, capsys):
    src, out = _folder(tmp_path / "src", 3), tmp_path / "out"
    assert main(_cli(src, out) + bad) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()  # nothing listed, nothing marked, not even the folder made


def test_crop_size_0_marks_nothing_and_the_corrected_run_does_everything(tmp_path, capsys):
    """The reported sequence: `--crop-size 0` used to mark every photo failed and exit 0, then the
    corrected run did nothing without --retry-failed."""
    src, out = _folder(tmp_path / "src", 4), tmp_path / "out"
    args = ["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none", "--no-progress"]
    assert main(args + ["--crop-size", "0"]) == 2
    assert not (out / "sources.sqlite").exists()
    assert main(args + ["--crop-size", "32"]) == 0
    assert "photos=4, done=4" in capsys.readouterr().out and _statuses(out) == {"done": 4}


def test_a_config_built_in_code_is_checked_too(tmp_path):
    out = tmp_path / "out"
    cfg = CurateConfig(out=str(out), from_dir=str(_folder(tmp_path / "src", 2)),
                       detect=DetectConfig(backend="none"), align=AlignConfig(crop_size=0))
    with pytest.raises(ValueError, match="crop_size"):
        run_curate(cfg, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown detector"):
        check_config(CurateConfig(detect=DetectConfig(backend="retina")))


def test_every_number_of_the_curate_config_has_a_range():
    """A new numeric option without `bounded(...)` would slip past the checks: fail here instead."""
    def walk(node, where=""):
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{where}{f.name}.")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                yield f"{where}{f.name}", f.metadata.get("range")
    unranged = [name for name, rng in walk(CurateConfig()) if rng is None]
    assert unranged == []
    check_config(CurateConfig())  # the defaults pass


# ---- --out ----------------------------------------------------------------------------------

def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    src = _folder(tmp_path / "src", 2)
    afile = tmp_path / "shards.tar"
    afile.write_bytes(b"not a folder")
    for out in (afile, afile / "sub"):
        assert main(_cli(src, out)) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(afile) in err
    assert afile.read_bytes() == b"not a folder"


# ---- the output lock (defect 11) -------------------------------------------------------------

HOLD = ("import sys, time; from facesift.common.lock import output_lock\n"
        "with output_lock(sys.argv[1], name=sys.argv[2]):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def _holder(out: Path, name: str = LOCK_NAME) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), name], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_exits_2_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", 4), tmp_path / "out"
    holder = _holder(out)
    try:
        start = time.monotonic()
        assert main(_cli(src, out)) == 2
        assert time.monotonic() - start < 30  # at once, not after the listing or any download
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another run" in err and "Traceback" not in err
        assert not (out / "sources.sqlite").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / LOCK_NAME).exists()  # the killed run's lock file is still there: stale, taken over
    assert main(_cli(src, out)) == 0
    assert _statuses(out) == {"done": 4}


def test_parts_of_one_job_share_a_folder_but_not_a_part(tmp_path, capsys):
    src, out = _folder(tmp_path / "src", 8), tmp_path / "out"
    holder = _holder(out, f"{LOCK_NAME}.part0")
    try:
        assert main(_cli(src, out, "--part", "1/2")) == 0  # another part runs beside it
        assert main(_cli(src, out, "--part", "0/2")) == 2  # the same part does not
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(_cli(src, out, "--part", "0/2")) == 0
    assert _statuses(out) == {"done": 8}


def test_the_lock_is_released_when_a_run_fails(tmp_path, monkeypatch):
    src, out = _folder(tmp_path / "src", 4), tmp_path / "out"
    cfg = CurateConfig(out=str(out), from_dir=str(src), download=DownloadConfig(workers=2),
                       detect=DetectConfig(backend="none"), align=AlignConfig(crop_size=32))
    original = Catalog.set_status_many

    def crash(self, updates):
        if any(u[1] == "done" for u in updates):
            raise OSError("simulated disk failure")
        return original(self, updates)

    monkeypatch.setattr(Catalog, "set_status_many", crash)
    with pytest.raises((RuntimeError, OSError), match="simulated disk failure"):
        run_curate(cfg, progress=False)
    with output_lock(out):  # free again (flock: a held lock would refuse this second open file)
        pass
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr("facesift.curate.pipeline.open_source", _raise(KeyboardInterrupt))
        run_curate(cfg, progress=False)
    with output_lock(out):
        pass


def _raise(exc):
    def fn(*a, **kw):
        raise exc
    return fn


def test_two_real_curates_on_one_out(tmp_path):
    """The reported crash: two `facesift curate` processes on one --out. The second exits 2 naming
    the first; after the first is killed -9 the next run takes its lock over and finishes."""
    src, out = _folder(tmp_path / "src", 40, size=64), tmp_path / "out"
    cmd = [sys.executable, "-m", "facesift", "-q", *_cli(src, out, "--maxcount", "5", "--workers", "1")]
    first = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        holder = {}
        while time.time() < deadline and first.poll() is None:
            try:
                holder = json.loads((out / LOCK_NAME).read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder.get("pid") == first.pid:
                first.send_signal(signal.SIGSTOP)  # hold it mid-run
                break
            time.sleep(0.005)
        # the lock is taken before the listing and held to the last write (40 photos): seen
        assert holder.get("pid") == first.pid, "the running curate held no lock on its --out"
        second = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 40 and _statuses(out) == {"done": 40}
    assert not list(out.glob(".*.tmp"))
