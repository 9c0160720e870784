"""`facesift embed`: resumable (interrupted runs finish identical to a clean run), rank slices,
hashes reused from curate's json, and clear messages for tiny or empty inputs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesift.analysis.config import EmbedConfig
from facesift.analysis.embed import embed_shards, load_embeddings
from facesift.analysis.embedders import hog_embedding
from facesift.analysis.hashes import compute
from tests.analysis.conftest import write_shard

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "landmarks5" / "images"
# `facesift embed` without importing every other stage's command module (faster start-up)
_RUNNER = ("import argparse, sys; from facesift.commands import embed; p = argparse.ArgumentParser(); "
           "embed.register(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def _faces(n: int, offset: int = 0):
    files = sorted(SAMPLE.glob("*.jpg"))[offset:offset + n]
    return [(f"f{offset + i:04d}_0", Image.open(p).convert("RGB"),
             {"photo_id": f"p{offset + i}", "owner": f"o{(offset + i) % 7}", "query": "face"})
            for i, p in enumerate(files)]


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """Three shards (120 samples), no index.json: counts come from reading the tars."""
    root = tmp_path_factory.mktemp("shards")
    for s in range(3):
        write_shard(root / f"faces-{s:06d}.tar", _faces(40, 40 * s))
    return root


def _outputs(d: Path):
    data = load_embeddings(d)
    return np.asarray(data["emb"]), np.asarray(data["hashes"]), data["keys"], data["meta"]


def _assert_same(a: Path, b: Path):
    ea, ha, ka, ma = _outputs(a)
    eb, hb, kb, mb = _outputs(b)
    assert ka == kb and ma == mb
    assert np.array_equal(ea, eb) and np.array_equal(ha, hb)


def test_interrupted_runs_resume_to_the_clean_result(small_shards, tmp_path):
    cfg = EmbedConfig(batch_size=8, chunk_rows=8, workers=2)
    clean = tmp_path / "clean"
    r = embed_shards(small_shards, clean, cfg, progress=False)
    assert r["complete"] and r["rows"] == 120 and r["dim"] == 576
    emb, hashes, keys, meta = _outputs(clean)
    assert emb.dtype == np.float16 and emb.shape == (120, 576)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    assert keys[0] == "f0000_0" and keys[-1] == "f0119_0" and meta[5]["owner"] == "o5"
    assert (clean / "keys.txt").read_text().split() == keys

    resumed = tmp_path / "resumed"
    parts = [embed_shards(small_shards, resumed, EmbedConfig(batch_size=8, chunk_rows=8, workers=2, max_batches=4),
                          progress=False) for _ in range(2)]
    assert [p["complete"] for p in parts] == [False, False]
    assert parts[1]["resumed_from"] == 32                    # continued, did not restart
    assert not (resumed / "embeddings.npy").exists()         # final names only when complete
    last = embed_shards(small_shards, resumed, cfg, progress=False)
    assert last["complete"] and last["resumed_from"] == 64 and last["embedded"] == 56
    _assert_same(clean, resumed)
    again = embed_shards(small_shards, resumed, cfg, progress=False)
    assert again["embedded"] == 0                            # idempotent


def test_killed_process_resumes(small_shards, tmp_path):
    """SIGKILL a real `facesift embed` process mid-way, then re-run: same result as a clean run."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-c", _RUNNER, "embed", "--shards", str(small_shards), "--out", str(out),
           "--batch-size", "4", "--workers", "1", "--no-progress", "--set", "chunk_rows=4"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob(".progress-*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(next(out.glob(".progress-*.json")).read_text())["done"]
    assert 0 < done < 120
    resumed = embed_shards(small_shards, out, EmbedConfig(batch_size=4, workers=1, chunk_rows=4), progress=False)
    assert resumed["complete"] and resumed["resumed_from"] == done and resumed["embedded"] == 120 - done
    clean = tmp_path / "clean"
    embed_shards(small_shards, clean, EmbedConfig(batch_size=16), progress=False)
    _assert_same(clean, out)


def test_rank_slices_match_single_process(small_shards, tmp_path):
    """Two ranks (run one after the other here) fill disjoint contiguous slices of one memmap."""
    cfg = EmbedConfig(batch_size=16)
    out = tmp_path / "ddp"
    first = embed_shards(small_shards, out, cfg, progress=False, rank=0, world=2)
    assert not first["complete"]                              # rank 1 has not run yet
    embed_shards(small_shards, out, cfg, progress=False, rank=1, world=2)
    last = embed_shards(small_shards, out, cfg, progress=False, rank=0, world=2)
    assert last["complete"]
    single = tmp_path / "single"
    embed_shards(small_shards, single, cfg, progress=False)
    _assert_same(single, out)


def test_hashes_from_json_are_reused_and_match_imagehash(tmp_path):
    faces = _faces(3)
    stored = compute(faces[1][1], "phash")
    faces[1][2]["phash"] = bytes(stored).hex()
    faces[2][2]["phash"] = "ffffffffffffffff"             # curate's value wins over recomputing
    write_shard(tmp_path / "s" / "faces-000000.tar", faces)
    embed_shards(tmp_path / "s", tmp_path / "e", EmbedConfig(), progress=False)
    hashes = np.asarray(load_embeddings(tmp_path / "e")["hashes"])
    import io
    import tarfile
    with tarfile.open(tmp_path / "s" / "faces-000000.tar") as tar:
        decoded = Image.open(io.BytesIO(tar.extractfile("f0000_0.jpg").read())).convert("RGB")
    assert np.array_equal(hashes[0, :8], compute(decoded, "phash"))
    assert np.array_equal(hashes[0, 8:], compute(decoded, "dhash"))
    assert np.array_equal(hashes[2, :8], np.full(8, 255, np.uint8))


def test_default_embedding_ignores_brightness_and_contrast():
    im = Image.open(sorted(SAMPLE.glob("*.jpg"))[0]).convert("RGB")
    arr = np.asarray(im, np.float32)
    brighter = Image.fromarray(np.clip(arr * 0.8 + 30, 0, 255).astype(np.uint8))
    other = Image.open(sorted(SAMPLE.glob("*.jpg"))[1]).convert("RGB")
    a, b, c = hog_embedding(im), hog_embedding(brighter), hog_embedding(other)
    assert a @ b > 0.98 and a @ c < a @ b


def _cli(*args: str) -> int:
    """Our two subcommands, parsed as the `facesift` script would parse them (in-process: fast)."""
    import argparse
    from facesift.commands import embed, redundancy
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    embed.register(sub)
    redundancy.register(sub)
    ns = parser.parse_args(args)
    return ns.func(ns)


def test_one_image_and_empty_inputs_give_clear_messages(tmp_path, caplog, capsys):
    write_shard(tmp_path / "one" / "faces-000000.tar", _faces(1))
    assert _cli("embed", "--shards", str(tmp_path / "one"), "--out", str(tmp_path / "e1"), "--no-progress") == 0
    assert "rows=1" in capsys.readouterr().out
    assert _cli("redundancy", "--emb", str(tmp_path / "e1"), "--out", str(tmp_path / "r1"), "--no-progress") == 2
    assert "needs at least 2 decodable images; " in caplog.text

    write_shard(tmp_path / "empty" / "faces-000000.tar", [])
    caplog.clear()
    assert _cli("embed", "--shards", str(tmp_path / "empty"), "--out", str(tmp_path / "e0"), "--no-progress") == 2
    assert "no samples" in caplog.text
    caplog.clear()
    assert _cli("embed", "--shards", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e2"), "--no-progress") == 2
    assert "not found" in caplog.text
    caplog.clear()
    assert _cli("redundancy", "--emb", str(tmp_path / "e0"), "--out", str(tmp_path / "r0"), "--no-progress") == 2
    assert "no complete embeddings" in caplog.text
    assert "Traceback" not in caplog.text


def test_bad_image_is_a_counted_row_not_a_crash(tmp_path):
    import webdataset as wds
    faces = _faces(3)
    write_shard(tmp_path / "s" / "faces-000000.tar", faces)
    with wds.TarWriter(str(tmp_path / "s" / "faces-000001.tar"), mtime=0) as sink:
        sink.write({"__key__": "broken_0", "jpg": b"<html>not an image</html>", "json": b"{}"})
    r = embed_shards(tmp_path / "s", tmp_path / "e", EmbedConfig(), progress=False)
    assert r["complete"] and r["errors"] == 1
    data = load_embeddings(tmp_path / "e")
    assert "undecodable" in data["meta"][3]["error"] and not np.asarray(data["emb"][3]).any()
