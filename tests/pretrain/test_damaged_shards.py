"""Damaged shards while streaming (issue 12): a truncated, zero-byte or non-tar shard is skipped
from the damage on, named in one warning line with the reason, counted (`damaged_shards=N`) and
the run exits 1 at the end — never a traceback — while every rank still gets the same number
of full batches and a resumed stream continues exactly."""
from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from facesift.pretrain.config import CropConfig, DataConfig
from facesift.pretrain.data import DataError, StreamState, count_samples, make_loader
from tests.pretrain.conftest import write_shards

CROPS = CropConfig(nmb_crops=[2, 1], size_crops=[32, 16])


def _data(**kw) -> DataConfig:
    base = dict(batch_size=4, workers=0, shuffle_buffer=8, resampled=False)
    base.update(kw)
    return DataConfig(**base)


def damaged_set(face_files, root: Path) -> tuple[list[str], dict[str, str], set[str]]:
    """Two good shards and four damaged ones: (urls, damaged url -> expected reason, keys that
    may be read: the good shards', the cut-inside one's and the 7 complete samples before the
    cut at a header — a sample counts as complete once the next one's header was read)."""
    paths = write_shards(face_files, root, [20, 20, 20, 20, 1, 1])
    key = lambda f: f"{f.parent.name}-{f.stem}_0"  # noqa: E731
    # cut inside a member's data (tarfile raises), and right at a header (tarfile stops quietly)
    inside = paths[2].read_bytes()
    paths[2].write_bytes(inside[: len(inside) // 2 + 100])
    with tarfile.open(paths[3]) as tar:
        at_header = tar.getmembers()[8].offset  # one jpg member per sample
    paths[3].write_bytes(paths[3].read_bytes()[:at_header])
    paths[4].write_bytes(b"")
    paths[5].write_bytes(b"<html>404 not found</html>" * 40)
    urls = [str(p) for p in paths]
    expected = {urls[2]: "truncated", urls[3]: "truncated", urls[4]: "empty", urls[5]: "not a tar"}
    return urls, expected, {key(f) for f in face_files[:67]}


def test_damaged_shards_are_reported_once_and_batches_stay_full(face_files, tmp_path):
    urls, expected, allowed = damaged_set(face_files, tmp_path)
    for rank_counts in [(0, 1), (0, 2), (1, 2)]:
        rank, world = rank_counts
        batches = list(make_loader(urls, CROPS, _data(), 4, seed=0, epoch=0, steps=12, rank=rank, world_size=world))
        assert len(batches) == 12 and all(b["crops"][0].shape[0] == 4 for b in batches)
        assert {k for b in batches for k in b["keys"]} <= allowed
        reports = [u for b in batches for u in b["damaged"]]
        assert len(reports) == len(set(reports))  # each shard once per worker
        mine = set(urls[rank::world]) & set(expected)
        assert set(reports) == mine
        for b in batches:
            for url, reason in b["damaged"].items():
                assert expected[url] in reason, (url, reason)
    found: dict[str, str] = {}
    assert 40 + 7 <= count_samples(str(tmp_path), damaged=found) < 40 + 7 + 20  # complete samples only
    assert set(found) == set(expected)


def test_resume_over_damaged_shards_is_exact(face_files, tmp_path):
    urls, _, _ = damaged_set(face_files, tmp_path)
    data = _data(workers=2, resampled=True)
    full = list(make_loader(urls, CROPS, data, 4, seed=3, epoch=1, steps=9))
    state = StreamState(num_workers=2)
    for b in full[:4]:
        state.update(b)
    rest = list(make_loader(urls, CROPS, data, 4, seed=3, epoch=1, steps=9, state=state))
    assert [b["keys"] for b in rest] == [b["keys"] for b in full[4:]]
    for a, b in zip(rest, full[4:]):
        assert all((x == y).all() for x, y in zip(a["crops"], b["crops"]))


@pytest.mark.parametrize("workers", [0, 1])
def test_only_damaged_shards_is_a_clear_error_not_a_hang(tmp_path, workers):
    from facesift.pretrain.train import one_line
    (tmp_path / "a.tar").write_bytes(b"")
    (tmp_path / "b.tar").write_bytes(b"not a tar" * 100)
    urls = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    for resampled in (False, True):
        with pytest.raises(ValueError) as info:
            list(make_loader(urls, CROPS, _data(workers=workers, resampled=resampled), 4, seed=0, epoch=0, steps=2))
        text = one_line(info.value)
        assert "no sample in any of the 2 shard(s)" in text and "\n" not in text, text
        assert "Traceback" not in text
    assert issubclass(DataError, ValueError)


@pytest.mark.timeout(600)
def test_pretrain_trains_on_names_counts_and_exits_1(face_files, tmp_path, capsys):
    from facesift.cli import main as cli_main
    from facesift.common.config import to_dict
    from tests.pretrain.test_train import tiny

    shards = tmp_path / "shards"
    urls, expected, _ = damaged_set(face_files, shards)
    out = tmp_path / "run"
    cfg = tiny(shards, out, max_steps=4)
    cfg.data.epoch_size = 0  # counted from the tars: the damage is found before training
    cfg.data.workers = 2
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    args = ["pretrain", "--shards", str(shards), "--out", str(out), "--config", str(cfg_file)]
    assert cli_main(args) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "damaged_shards=4" in captured.out and "steps=4" in captured.out
    for url, reason in expected.items():
        lines = [line for line in captured.err.splitlines() if url in line]
        assert len(lines) == 1 and "WARNING" in lines[0] and reason in lines[0], captured.err
    assert (out / "backbone.pt").exists()

    # the finished run re-run: its record of the damage stands, no line repeated
    assert cli_main(args + ["--resume"]) == 1
    captured = capsys.readouterr()
    assert "damaged_shards=4" in captured.out and not any(u in captured.err for u in expected)


@pytest.mark.timeout(300)
def test_a_stream_of_only_damaged_shards_exits_2_at_once(tmp_path):
    """The index promises samples, every shard is damaged: found by the loader workers while
    streaming; the process says so in one line and exits 2 — promptly, not waiting for ever on
    loader workers that ignore the SIGTERM multiprocessing sends at exit."""
    import os
    import subprocess
    import sys
    import time

    from facesift.shards.index import write_index
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "faces-000000.tar").write_bytes(b"")
    (shards / "faces-000001.tar").write_bytes(b"\x00garbage" * 300)
    write_index(shards, [{"url": f"faces-00000{i}.tar", "nsamples": 50} for i in range(2)])
    root = Path(__file__).resolve().parents[2]
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "facesift.pretrain.train", "--shards", str(shards),
                           "--out", str(tmp_path / "run"), "--config", str(root / "configs" / "cpu-tiny.yaml"),
                           "--set", "data.workers=2", "--set", "data.batch_size=4", "--set", "model.hidden_mlp=16"],
                          cwd=root, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root)),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    assert time.monotonic() - t0 < 120
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no sample in any of the 2 shard(s)" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(600)
def test_nproc_names_each_damaged_shard_once_and_exits_1(face_files, tmp_path):
    """Two ranks meet the same damaged shards: one warning line each (rank 0's), one summary,
    and the launcher — not a failing torchrun worker — turns the damage into exit 1."""
    import os
    import subprocess
    import sys

    from facesift.common.config import to_dict
    from tests.pretrain.test_train import tiny

    shards = tmp_path / "shards"
    urls, expected, _ = damaged_set(face_files, shards)
    out = tmp_path / "run"
    cfg = tiny(shards, out, max_steps=2)
    cfg.data.epoch_size = 0
    cfg.data.workers = 1
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": to_dict(cfg)}))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "facesift.cli", "pretrain", "--nproc", "2", "--shards", str(shards),
                           "--out", str(out), "--config", str(cfg_file)], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root)), timeout=500)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-4000:]
    assert "Traceback" not in text and text.count("damaged_shards=4") == 1, text[-4000:]
    for url in expected:
        assert sum(url in line for line in text.splitlines()) == 1, text[-4000:]
    assert (out / "backbone.pt").exists()
