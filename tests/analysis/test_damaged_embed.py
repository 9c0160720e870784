"""`facesift embed` / `redundancy` on bad input (issue 12, defects 8, 10 and 11).

A damaged local shard is refused before anything is written (exit 1: rows must follow the
index, so it cannot be skipped); a shard that breaks while being read stops the run at a
checkpoint (exit 1) that the same command continues, and a run that stops before its first
checkpoint leaves no `.partial` file. Options are range-checked before any work (exit 2), one
run per output directory (exit 2 naming the holder's pid), and a corrupt embeddings folder is
one clear line (exit 2). Never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facesift.analysis.config import EmbedConfig
from facesift.analysis.embed import embed_shards, load_embeddings
from facesift.shards.index import write_index
from tests.analysis.test_embed import _RUNNER, _cli
from tests.shards.fake_shards import DAMAGE_KINDS, damage, keys_grid, make_set, sha256

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = keys_grid(3, 6)


def _state(out: Path) -> list[str]:
    """Resume state and temporaries in `out` (the lock file is not state)."""
    return sorted(p.name for p in out.glob("*") if p.name.endswith((".partial", ".tmp"))
                  or p.name.startswith(".progress-"))


def _quiet(capsys, caplog) -> str:
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_a_damaged_local_shard_is_refused_before_anything_is_written(tmp_path, kind, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT)[0].parent
    damage(root / "faces-000001.tar", kind)
    out = tmp_path / "emb"
    assert _cli("embed", "--shards", str(root), "--out", str(out), "--no-progress") == 1
    text = _quiet(capsys, caplog)
    assert "damaged shard" in text and "faces-000001.tar" in text and "damaged_shards=1" in text
    assert [p.name for p in out.iterdir()] == [".facesift.lock"]       # no .partial, no info.json


def test_redundancy_embedding_a_damaged_set_exits_1(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT)[0].parent
    damage(root / "faces-000002.tar", "cut-in-data")
    assert _cli("redundancy", "--shards", str(root), "--out", str(tmp_path / "red"), "--no-progress") == 1
    assert "faces-000002.tar" in _quiet(capsys, caplog)
    assert _state(tmp_path / "red" / "emb") == [] and not (tmp_path / "red" / "summary.json").exists()


def test_a_stale_index_is_refused_before_anything_is_written(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT)[0].parent
    index = json.loads((root / "index.json").read_text())
    index["shardlist"][1]["nsamples"] = 9
    write_index(root, index["shardlist"])
    out = tmp_path / "emb"
    assert _cli("embed", "--shards", str(root), "--out", str(out), "--no-progress") == 2
    assert "index is stale" in _quiet(capsys, caplog) and _state(out) == []


def _remote_set(root: Path) -> Path:
    """The layout behind an index whose second shard is read through `pipe:` (not pre-checked)."""
    paths = make_set(root, LAYOUT)
    entries = [{"url": p.name if i != 1 else f"pipe:cat {p}", "nsamples": 6, "sha256": sha256(p)}
               for i, p in enumerate(paths)]
    write_index(root, entries)
    return root


def test_a_shard_that_breaks_while_read_stops_at_a_checkpoint_the_same_command_continues(tmp_path, capsys, caplog):
    root = _remote_set(tmp_path / "s")
    whole = (root / "faces-000001.tar").read_bytes()
    damage(root / "faces-000001.tar", "cut-in-data")
    out = tmp_path / "emb"
    argv = ("embed", "--shards", str(root), "--out", str(out), "--no-progress", "--batch-size", "4",
            "--set", "chunk_rows=4")
    assert _cli(*argv) == 1
    text = _quiet(capsys, caplog)
    assert "damaged_shards=1" in text and "pipe:cat" in text and "re-run the same command" in text
    ledger = json.loads((out / ".progress-0-of-1.json").read_text())
    assert ledger["done"] == 6 + 3                  # the first shard and the 3 samples before the damage
    assert not (out / "embeddings.npy").exists()
    (root / "faces-000001.tar").write_bytes(whole)  # the shard reads whole again
    assert _cli(*argv) == 0
    assert "resumed_from=9" in _quiet(capsys, caplog) and _state(out) == []
    clean = tmp_path / "clean"
    embed_shards(root, clean, EmbedConfig(), progress=False)
    a, b = load_embeddings(out), load_embeddings(clean)
    assert a["keys"] == b["keys"] == [k for keys in LAYOUT for k in keys]
    assert np.array_equal(np.asarray(a["emb"]), np.asarray(b["emb"]))


def test_a_run_that_stops_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys, caplog, monkeypatch):
    root = _remote_set(tmp_path / "s")
    paths = sorted(root.glob("*.tar"))
    write_index(root, [{"url": f"pipe:cat {paths[1]}", "nsamples": 6}, {"url": paths[0].name, "nsamples": 6}])
    damage(paths[1], "zero-bytes")                  # the very first shard breaks: no row done
    out = tmp_path / "emb"
    assert _cli("embed", "--shards", str(root), "--out", str(out), "--no-progress") == 1
    _quiet(capsys, caplog)
    assert _state(out) == [] and not (out / "info.json").exists()

    import facesift.analysis.embedders as embedders
    monkeypatch.setattr(embedders.Embedder, "__call__", lambda self, batch: (_ for _ in ()).throw(
        RuntimeError("out of memory")))          # an unexpected error in the first batch
    good = make_set(tmp_path / "g", LAYOUT[:1])[0].parent
    with pytest.raises(RuntimeError):
        embed_shards(good, tmp_path / "emb2", EmbedConfig(), progress=False)
    assert _state(tmp_path / "emb2") == [] and not (tmp_path / "emb2" / "info.json").exists()


def test_a_stop_request_checkpoints_and_exits_with_the_signal_status(tmp_path, capsys, caplog, monkeypatch):
    root = make_set(tmp_path / "s", LAYOUT)[0].parent
    out = tmp_path / "emb"
    import facesift.analysis.embed as embed
    monkeypatch.setattr(embed, "requested", lambda: "SIGINT")
    argv = ("embed", "--shards", str(root), "--out", str(out), "--no-progress", "--batch-size", "4")
    assert _cli(*argv) == 128 + signal.SIGINT
    assert json.loads((out / ".progress-0-of-1.json").read_text())["done"] == 4   # kept: it is resumable
    monkeypatch.setattr(embed, "requested", lambda: None)
    assert _cli(*argv) == 0
    assert "resumed_from=4" in _quiet(capsys, caplog) and _state(out) == []


def test_ctrl_c_on_a_real_process_checkpoints_and_the_rerun_finishes(tmp_path):
    root = make_set(tmp_path / "s", keys_grid(4, 30))[0].parent
    out = tmp_path / "emb"
    cmd = [sys.executable, "-c", _RUNNER, "embed", "--shards", str(root), "--out", str(out),
           "--batch-size", "2", "--workers", "1", "--no-progress", "--set", "chunk_rows=2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / ".progress-0-of-1.json").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGINT, err
    done = json.loads((out / ".progress-0-of-1.json").read_text())["done"]
    resumed = embed_shards(root, out, EmbedConfig(batch_size=2, workers=1), progress=False)
    assert resumed["complete"] and resumed["resumed_from"] == done and _state(out) == []


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path, capsys, caplog):
    from facesift.common.lock import output_lock
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    emb = tmp_path / "emb"
    embed_shards(root, emb, EmbedConfig(), progress=False)
    for argv, out in ((("embed", "--shards", str(root)), tmp_path / "busy"),
                      (("redundancy", "--emb", str(emb)), tmp_path / "busy-red")):
        with output_lock(out):
            assert _cli(*argv, "--out", str(out), "--no-progress") == 2
        assert f"pid {os.getpid()}" in caplog.text and "in use" in caplog.text
        assert _state(out) == [] and not (out / "info.json").exists() and not (out / "summary.json").exists()
        caplog.clear()
    _quiet(capsys, caplog)


def test_an_out_that_is_a_file_exits_2(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    emb = tmp_path / "emb"
    embed_shards(root, emb, EmbedConfig(), progress=False)
    a_file = tmp_path / "file"
    a_file.write_text("keep\n")
    assert _cli("embed", "--shards", str(root), "--out", str(a_file), "--no-progress") == 2
    assert _cli("redundancy", "--emb", str(emb), "--out", str(a_file), "--no-progress") == 2
    assert caplog.text.count("not a directory") == 2 and a_file.read_text() == "keep\n"
    _quiet(capsys, caplog)


BAD_EMBED = [["--batch-size", "0"], ["--image-size", "0"], ["--workers", "0"], ["--max-batches", "0"],
             ["--set", "chunk_rows=0"], ["--set", "hog_cell=64"], ["--set", "dct_keep=0"],
             ["--set", "embedding=sift"]]
BAD_REDUNDANCY = [["--threshold", "5"], ["--threshold", "-1.5"], ["--threshold", "nan"], ["--hamming", "65"],
                  ["--hamming", "-1"], ["--clusters", "0"], ["--seed", "-1"], ["--set", "search.k=0"],
                  ["--set", "search.nprobe=0"], ["--set", "sweep=[0.9,1.5]"], ["--set", "sweep=[]"],
                  ["--set", "kmeans_iters=0"], ["--set", "search.index=lsh"], ["--set", "by=sha"],
                  ["--grouping", "semdedup", "--by", "phash"]]


@pytest.mark.parametrize("extra", BAD_EMBED + BAD_REDUNDANCY, ids=" ".join)
def test_out_of_range_options_exit_2_and_do_nothing(tmp_path, extra, capsys, caplog, monkeypatch):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    emb = tmp_path / "emb"
    embed_shards(root, emb, EmbedConfig(), progress=False)
    import facesift.shards.reader as reader
    monkeypatch.setattr(reader, "iter_members", lambda *a, **k: pytest.fail("a shard was read"))
    out = tmp_path / "out"
    command = ("embed", "--shards", str(root)) if extra in BAD_EMBED else ("redundancy", "--emb", str(emb))
    assert _cli(*command, "--out", str(out), "--no-progress", *extra) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert not out.exists()
    _quiet(capsys, caplog)


def _corrupt(emb: Path, what: str) -> None:
    if what == "info-not-json":
        (emb / "info.json").write_text('{"rows": 6, "dim"')
    elif what == "embeddings-truncated":
        data = (emb / "embeddings.npy").read_bytes()
        (emb / "embeddings.npy").write_bytes(data[:len(data) // 2])
    elif what == "embeddings-garbage":
        (emb / "embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    elif what == "hashes-wrong-rows":
        np.save(emb / "hashes.npy", np.zeros((5, 16), np.uint8))
    elif what == "meta-cut-mid-line":
        text = (emb / "meta.jsonl").read_text()
        (emb / "meta.jsonl").write_text(text[:len(text) - 20])
    elif what == "meta-missing-rows":
        lines = (emb / "meta.jsonl").read_text().splitlines()
        (emb / "meta.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    elif what == "meta-missing":
        (emb / "meta.jsonl").unlink()


@pytest.mark.parametrize("what", ["info-not-json", "embeddings-truncated", "embeddings-garbage", "hashes-wrong-rows",
                                  "meta-cut-mid-line", "meta-missing-rows", "meta-missing"])
def test_a_corrupt_embeddings_folder_is_one_clear_line(tmp_path, what, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    emb = tmp_path / "emb"
    embed_shards(root, emb, EmbedConfig(), progress=False)
    _corrupt(emb, what)
    assert _cli("redundancy", "--emb", str(emb), "--out", str(tmp_path / "red"), "--no-progress", "--by", "phash") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(emb) in errors[0], errors
    _quiet(capsys, caplog)
    assert not (tmp_path / "red" / "summary.json").exists()


def test_a_corrupt_resume_state_is_one_clear_line(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT)[0].parent
    out = tmp_path / "emb"
    argv = ("embed", "--shards", str(root), "--out", str(out), "--no-progress", "--batch-size", "4",
            "--max-batches", "1")
    assert _cli(*argv) == 0
    (out / ".progress-0-of-1.json").write_text("{")
    assert _cli(*argv) == 2
    assert ".progress-0-of-1.json" in caplog.text
    (out / "info.json").write_bytes(b"\x00\x01")
    assert _cli(*argv) == 2
    assert "info.json" in caplog.text
    _quiet(capsys, caplog)


def test_a_broken_index_or_clusters_file_is_one_clear_line(tmp_path, capsys, caplog):
    from tests.analysis.test_selection_cli import _split
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    (tmp_path / "red").mkdir()
    (tmp_path / "red" / "clusters.tsv").write_text("key\tcluster\tcentroid_sim\np0x0_0\t0\t0.9\np0x1_")
    assert _split(str(root), "--method", "cluster-balanced", "--clusters", str(tmp_path / "red"),
                  "--out", str(tmp_path / "cb")) == 2
    assert "clusters.tsv" in caplog.text and "cut off" in caplog.text and not (tmp_path / "cb").exists()
    caplog.clear()
    (root / "index.json").write_text("[1, 2")
    assert _cli("embed", "--shards", str(root), "--out", str(tmp_path / "e"), "--no-progress") == 2
    assert "index.json" in caplog.text and "not valid JSON" in caplog.text
    _quiet(capsys, caplog)
