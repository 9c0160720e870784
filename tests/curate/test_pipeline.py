"""End-to-end curate: sandbox catalog over HTTP, local folders, URL lists, bad inputs,
kill -9 and resume exactly-once, --part slices, read-back with webdataset and wids."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from facesift.curate.catalog import Catalog
from facesift.curate.config import AlignConfig, CurateConfig, DetectConfig, DownloadConfig
from facesift.curate.pipeline import run_curate
from facesift.shards.index import read_index, shard_urls
from facesift.shards.reader import iter_keys
from facesift.flickr_sandbox import FlickrSandbox, SandboxConfig

ROOT = Path(__file__).resolve().parents[2]


def _cfg(out: Path, **kw) -> CurateConfig:
    cfg = CurateConfig(out=str(out), download=DownloadConfig(workers=2, timeout=2.0, retries=1, backoff=0.05),
                       detect=DetectConfig(device="cpu"), align=AlignConfig(crop_size=64))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _samples(out: Path) -> list[dict]:
    return list(wds.WebDataset(shard_urls(out), shardshuffle=False).decode("pil"))


def _keys(out: Path) -> list[str]:
    return [k for url in shard_urls(out) for k in iter_keys(url)]


def _statuses(ledger: Path) -> dict[str, str]:
    """{photo: status}; a folder's photos by relative path (their `title`; the id adds a hash)."""
    with Catalog(ledger) as cat:
        return {(r["title"] if r["source"] == "dir" else r["id"]): r["status"] for r in cat.all_photos()}


def _row(ledger: Path, rel: str) -> dict:
    """The ledger row of the folder file at relative path `rel`."""
    with Catalog(ledger) as cat:
        (row,) = [r for r in cat.all_photos() if r["source"] == "dir" and r["title"] == rel]
    return row


@pytest.fixture(scope="module")
def yale_and_t1(shared_data, tmp_path_factory):
    """A folder of the 164 Yale GIFs plus t1.jpg, curated once (crop 64) for several tests."""
    src = tmp_path_factory.mktemp("yale_src")
    for p in sorted((shared_data / "yalefaces").glob("*.gif")):
        (src / p.name).symlink_to(p)
    (src / "group").mkdir()
    (src / "group" / "t1.jpg").symlink_to(shared_data / "photos" / "t1.jpg")
    out = tmp_path_factory.mktemp("yale_out")
    cfg = _cfg(out, from_dir=str(src))
    cfg.detect.batch_size, cfg.detect.min_face_px = 32, 60  # the faces here are ≥ 90 px: a shorter pyramid
    cfg.download.dedupe = False  # Yale has byte-identical files (checked below); keep them all here
    counts = run_curate(cfg, progress=False)
    return src, out, counts


def test_every_yale_photo_one_face_and_t1_six(yale_and_t1):
    src, out, counts = yale_and_t1
    samples = _samples(out)
    per_photo = collections.Counter(s["json"]["title"] for s in samples)  # a folder file's relative path
    yale = [p.name for p in src.glob("*.gif")]
    assert len(yale) == 164
    assert {p: per_photo[p] for p in yale} == {p: 1 for p in yale}
    assert per_photo["group/t1.jpg"] == 6
    assert counts.faces == 170 and counts.photos["done"] == 165
    # keys: <photo_id>_<face_index>, the id a readable path plus a hash (Yale names have dots)
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys) and not any("." in k or "/" in k for k in keys)
    assert all(s["__key__"] == f"{s['json']['photo_id']}_{s['json']['face_index']}" for s in samples)
    assert any(k.startswith("subject01-glasses-gif-") and k.endswith("_0") for k in keys)
    s = next(s for s in samples if s["json"]["title"] == "group/t1.jpg" and s["json"]["face_index"] == 0)
    assert s["__key__"].startswith("group-t1-jpg-")
    assert s["jpg"].size == (64, 64)
    meta = s["json"]
    for field in ("photo_id", "face_index", "bbox", "landmarks", "score", "source_size", "license",
                  "license_url", "owner", "title", "query", "url", "detector", "crop_size", "phash",
                  "dhash", "sharpness", "yaw", "source", "sha256"):
        assert field in meta, field
    assert meta["source_size"] == [1280, 886] and meta["detector"] == "mtcnn" and len(meta["phash"]) == 16
    assert np.array(meta["landmarks"]).shape == (5, 2) and meta["score"] >= 0.95
    assert all(v == "done" for v in _statuses(out / "sources.sqlite").values())
    # the exact-duplicate skip would have caught Yale's byte-identical files
    shas = collections.Counter(s["json"]["sha256"] for s in samples if s["json"]["title"] in yale)
    assert sum(c - 1 for c in shas.values()) == 9
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 170 and stats["photos_by_status"] == {"done": 165}


def test_shards_read_back_with_wids(yale_and_t1):
    import wids
    _, out, _ = yale_and_t1
    ds = wids.ShardListDataset(str(out / "index.json"))
    assert len(ds) == 170
    sample = ds[169]
    assert sample[".json"] if ".json" in sample else sample["json"]
    assert sum(e["nsamples"] for e in read_index(out / "index.json")["shardlist"]) == 170


def test_rerun_is_idempotent(yale_and_t1):
    src, out, _ = yale_and_t1
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    counts = run_curate(_cfg(out, from_dir=str(src)), progress=False)
    assert sum(counts.photos.values()) == 0 and counts.faces == 0
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before


# ---- the crawl catalog over HTTP ----------------------------------------------------------------

def test_catalog_from_sandbox_crawl(shared_data, tmp_path, monkeypatch):
    from facesift.curate.crawl import CrawlConfig, crawl
    monkeypatch.setenv("FLICKR_API_KEY", "test-key-1234")
    monkeypatch.setenv("FLICKR_API_SECRET", "test-secret-5678")
    sb_cfg = SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 8}, seed=2,
                           no_cv_rate=0.0, min_date="2010-01-01", max_date="2024-12-31")
    with FlickrSandbox(sb_cfg) as sb:
        catalog = tmp_path / "catalog.sqlite"
        crawl(CrawlConfig(catalog=str(catalog), api_url=sb.api_url, licenses=list(range(11)), rate=1e9,
                          min_date="2010-01-01", max_date="2024-12-31"), progress=False)
        with Catalog(catalog) as cat:
            n = len(cat.pending())
        assert n == 8
        out = tmp_path / "shards"
        cfg = _cfg(out, catalog=str(catalog))
        cfg.detect.max_side = 480  # detection cost; crops still come from the full-size photo
        counts = run_curate(cfg, progress=False)
    status = _statuses(catalog)
    assert "pending" not in status.values() and sum(counts.photos.values()) == 8
    samples = _samples(out)
    assert len(samples) == counts.faces > 0
    done = {p for p, s in status.items() if s == "done"}
    assert {s["json"]["photo_id"] for s in samples} == done
    with Catalog(catalog) as cat:
        for s in samples:
            row, meta = cat.get(s["json"]["photo_id"]), s["json"]
            assert (meta["license"], meta["owner"], meta["url"], meta["query"]) == \
                (row["license"], row["owner"], row["url"], row["query"])
            assert meta["sha256"] == row["sha256"]
    blob = b"".join(p.read_bytes() for p in out.glob("*")) + catalog.read_bytes()
    assert b"test-key-1234" not in blob and b"test-secret-5678" not in blob


@pytest.mark.parametrize("processes", [1, 2])
def test_bad_inputs_are_counted_skips(shared_data, tmp_path, processes):
    with FlickrSandbox(SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 4},
                                     slow_seconds=4.0)) as sb:
        bad = ["corrupt.jpg", "truncated.jpg", "html.jpg", "huge.png", "404", "500", "slow.jpg"]
        urls = [f"{sb.base_url}/bad/{b}" for b in bad] + [f"{sb.base_url}/bad/flaky/x.jpg"]
        good = [sb.photo_url(p, "c") for p in sb.photos if "c" in p.sizes][:2]
        listing = tmp_path / "urls.csv"
        listing.write_text("url,caption\n" + "".join(f"{u},c\n" for u in urls + good))
        out = tmp_path / "out"
        cfg = _cfg(out, from_urls=str(listing))
        cfg.detect.backend = "none"
        cfg.download.timeout, cfg.download.processes = 1.0, processes
        counts = run_curate(cfg, progress=False)
        assert sum(run_curate(cfg, progress=False).photos.values()) == 0  # nothing left to do
        cfg.retry_failed = True
        again = run_curate(cfg, progress=False)  # failures are retried on request, and fail again
        assert again.photos == {"failed": len(bad)}
    with Catalog(out / "sources.sqlite") as cat:
        rows = {r["url"].rsplit("/bad/", 1)[-1]: r for r in cat.all_photos()}
    for b in bad:
        assert rows[b]["status"] == "failed" and rows[b]["error"], b
    assert counts.photos["failed"] == len(bad) and counts.photos["done"] == 3
    assert "timeout" in rows["slow.jpg"]["error"] and "HTML" in rows["html.jpg"]["error"]
    assert len(_samples(out)) == 3


def _synthetic_src(tmp_path: Path, n: int = 24) -> Path:
    """`n` random PNGs (half in a subfolder), a byte copy of the first, and a text file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48 + i, 80, 3), dtype=np.uint8)).save(
            src / ("sub" if i % 2 else "") / f"img.{i}.png")
    (src / "copy.png").write_bytes((src / "img.0.png").read_bytes())
    (src / "notes.txt").write_text("not an image")
    return src


def test_exact_duplicates_parts_and_deterministic_bytes(tmp_path):
    """--detector none on synthetic images: fast, so parts / duplicates / byte identity are cheap."""
    src = _synthetic_src(tmp_path)

    def run(out, **kw):
        cfg = _cfg(out, from_dir=str(src), **kw)
        cfg.detect.backend = "none"
        cfg.shards.maxcount = 5
        return run_curate(cfg, progress=False)

    full = run(tmp_path / "a")
    assert full.photos == {"done": 24, "skipped": 1}
    with Catalog(tmp_path / "a" / "sources.sqlite") as cat:
        copy = next(r for r in cat.all_photos() if r["title"] == "copy.png")
    # first in id order wins (ids start with the sanitised path: copy-png-… < img-0-png-…)
    assert _row(tmp_path / "a" / "sources.sqlite", "img.0.png")["error"] == f"exact duplicate of {copy['id']}"
    assert _row(tmp_path / "a" / "sources.sqlite", "img.0.png")["reason"] == "exact duplicate"
    run(tmp_path / "b")
    a, b = sorted((tmp_path / "a").glob("*.tar")), sorted((tmp_path / "b").glob("*.tar"))
    assert len(a) == 5 and [x.read_bytes() for x in a] == [y.read_bytes() for y in b]

    parts = tmp_path / "parts"
    for k in range(3):
        run(parts, part=f"{k}/3")
    for k in range(3):
        assert (parts / f"index-p{k}of3.json").exists() and read_index(parts / f"index-p{k}of3.json")["part"] == f"{k}/3"
    part_keys = [set(iter_keys(str(p))) for p in sorted(parts.glob("faces-p*.tar"))]
    all_part_keys = [k for ks in part_keys for k in ks]
    assert sorted(all_part_keys) == sorted(_keys(tmp_path / "a"))  # disjoint, and together complete
    per_part = [sum(1 for p in parts.glob(f"faces-p{k}of3-*.tar") for _ in iter_keys(str(p))) for k in range(3)]
    assert all(n > 0 for n in per_part)
    try:
        from facesift.shards.merge import merge_indexes, find_part_indexes
    except ImportError:
        return
    merge_indexes(find_part_indexes(parts), parts / "index.json")
    assert sorted(_keys(parts)) == sorted(all_part_keys)


def test_download_processes_give_the_same_shards_and_catalog(tmp_path):
    """`download.processes=2` (the GIL-free whole-image path) changes where the work runs, not
    what is written: the same shard bytes, the same statuses, reasons and errors."""
    src = _synthetic_src(tmp_path, n=30)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)   # a JPEG header, then nothing

    def run(out, processes):
        cfg = _cfg(out, from_dir=str(src))
        cfg.detect.backend, cfg.shards.maxcount = "none", 7
        cfg.download.workers, cfg.download.processes = 4, processes
        return run_curate(cfg, progress=False)

    one, two = run(tmp_path / "one", 1), run(tmp_path / "two", 2)
    assert one.photos == two.photos == {"done": 30, "skipped": 1, "failed": 1}
    a, b = sorted((tmp_path / "one").glob("*.tar")), sorted((tmp_path / "two").glob("*.tar"))
    assert len(a) == 5 and [x.read_bytes() for x in a] == [y.read_bytes() for y in b]

    def ledger(out):
        with Catalog(out / "sources.sqlite") as cat:
            return sorted((r["title"], r["status"], r["reason"], r["error"]) for r in cat.all_photos())
    assert ledger(tmp_path / "one") == ledger(tmp_path / "two")
    assert sum(run(tmp_path / "two", 2).photos.values()) == 0   # resumes: nothing left to do


# ---- crash safety --------------------------------------------------------------------------------

def test_crash_between_rename_and_catalog_update_is_reconciled(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"

    def cfg():
        c = _cfg(out, from_dir=str(src))
        c.detect.backend = "none"
        c.shards.maxcount = 5
        return c

    original = Catalog.set_status_many
    calls = []

    def crash_on_done(self, updates):
        if any(u[1] == "done" for u in updates):
            calls.append(updates)
            if len(calls) == 2:  # the second shard is renamed + indexed, then the process "dies"
                raise OSError("simulated crash")
        return original(self, updates)

    monkeypatch.setattr(Catalog, "set_status_many", crash_on_done)
    with pytest.raises(RuntimeError, match="writer thread failed"):
        run_curate(cfg(), progress=False)
    monkeypatch.setattr(Catalog, "set_status_many", original)
    assert len(list(out.glob("faces-*.tar"))) == 2
    counts = run_curate(cfg(), progress=False)
    assert counts.recovered == 5
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 12
    assert set(_statuses(out / "sources.sqlite").values()) == {"done"}


def _shard_count(out: Path) -> int:
    return len(list(out.glob("faces-*.tar")))


def test_kill_9_and_resume_exactly_once(yale_and_t1, tmp_path):
    """SIGKILL a real `facesift curate` process at several moments; the final shards hold every
    face of the clean run exactly once."""
    yale_src, clean_out, _ = yale_and_t1
    src = tmp_path / "src"
    src.mkdir()
    names = sorted(p.name for p in yale_src.glob("*.gif"))[:14]
    for n in names:
        (src / n).symlink_to((yale_src / n).resolve())
    with Catalog(clean_out / "sources.sqlite") as cat:
        ids = {r["id"] for r in cat.all_photos() if r["title"] in names}
    clean = {k for k in _keys(clean_out) if k.rsplit("_", 1)[0] in ids}
    assert len(clean) == 14
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facesift", "-q", "curate", "--from-dir", str(src), "--out", str(out),
           "--maxcount", "2", "--crop-size", "64", "--workers", "2", "--batch-size", "4",
           "--device", "cpu", "--no-progress", "--set", "detect.min_face_px=60",
           "--set", "download.dedupe=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def kill_when(predicate, timeout=120.0):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not predicate():
            time.sleep(0.02)
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return finished

    kill_when(lambda: False, timeout=1.5)                                     # during start-up
    kill_when(lambda: _shard_count(out) >= 1)                                  # just after a shard
    n = _shard_count(out)
    kill_when(lambda: _shard_count(out) >= n + 1 and bool(list(out.glob(".faces-*.tmp"))))  # shard in flight
    assert kill_when(lambda: False, timeout=300), "the final run must finish"
    keys = _keys(out)
    assert len(keys) == len(set(keys)), [k for k, c in collections.Counter(keys).items() if c > 1]
    assert set(keys) == clean
    assert set(_statuses(out / "sources.sqlite").values()) == {"done"}
    assert not list(out.glob(".*.tmp"))


# ---- sources and the command line --------------------------------------------------------------

def test_url_lists_txt_csv_parquet(tmp_path):
    import pandas as pd
    from facesift.curate.sources import read_url_list, url_id
    urls = ["http://a.example/1.jpg", "https://b.example/x/2.png"]
    (tmp_path / "u.txt").write_text("# my list\n" + "\n".join(urls) + "\n\n")
    pd.DataFrame({"url": urls, "caption": ["a", "b"]}).to_csv(tmp_path / "u.csv", index=False)
    pd.DataFrame({"url": urls}).to_parquet(tmp_path / "u.parquet")
    for name in ("u.txt", "u.csv", "u.parquet"):
        assert read_url_list(tmp_path / name) == urls
    pd.DataFrame({"link": urls}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="no `url` column"):
        read_url_list(tmp_path / "bad.csv")
    assert url_id(urls[0]) == url_id(urls[0]) != url_id(urls[1]) and "." not in url_id(urls[0])


def test_cli_errors_are_clear(tmp_path, capsys):
    from facesift.cli import main
    assert main(["curate", "--out", str(tmp_path / "o")]) == 2  # no source
    assert main(["curate", "--catalog", str(tmp_path / "missing.sqlite"), "--out", str(tmp_path / "o")]) == 2
    assert main(["curate", "--from-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--part", "2/2"]) == 2
    assert main(["curate", "--from-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--detector", "scrfd"]) == 2


def test_cli_whole_images(tmp_path, capsys):
    from facesift.cli import main
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (300 + 10 * i, 200), (i * 80, 0, 0)).save(src / f"p{i}.jpg", quality=90)
    out = tmp_path / "out"
    assert main(["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none", "--crop-size", "96",
                 "--no-progress"]) == 0
    assert "curate: photos=3, done=3" in capsys.readouterr().out
    samples = _samples(out)
    assert [s["jpg"].size for s in samples] == [(96, 96)] * 3
    assert samples[0]["json"]["source_size"] == [300, 200] and samples[0]["json"]["detector"] == "none"
    assert (out / "curate-config.yaml").exists()


def test_ctrl_c_keeps_the_finished_photos(tmp_path, monkeypatch):
    import facesift.curate.pipeline as pipeline
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        Image.new("RGB", (60, 50), (20 * i, 0, 0)).save(src / f"{i}.png")
    cfg = _cfg(tmp_path / "out", from_dir=str(src))
    cfg.detect.backend, cfg.detect.batch_size = "none", 3
    real = pipeline._batches

    def interrupted(*args, **kw):
        for n, batch in enumerate(real(*args, **kw)):
            if n == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(pipeline, "_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_curate(cfg, progress=False)
    monkeypatch.setattr(pipeline, "_batches", real)
    status = _statuses(tmp_path / "out" / "sources.sqlite")
    assert sorted(status.values()).count("done") == 6 and len(_keys(tmp_path / "out")) == 6
    run_curate(cfg, progress=False)
    keys = _keys(tmp_path / "out")
    assert len(keys) == len(set(keys)) == 10


def test_sigterm_keeps_the_finished_photos_and_exits_143(tmp_path, monkeypatch, capsys):
    """A scheduler's SIGTERM stops `facesift curate` at the next batch like a Ctrl-C: the photos
    already processed are in a complete shard, the rest stay pending for the next run."""
    import signal

    import facesift.curate.pipeline as pipeline
    from facesift.cli import main
    src = tmp_path / "src"
    src.mkdir()
    for i in range(10):
        Image.new("RGB", (60, 50), (20 * i, 0, 0)).save(src / f"{i}.png")
    out = tmp_path / "out"
    args = ["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none", "--batch-size", "3",
            "--crop-size", "32", "--no-progress"]
    real = pipeline._batches

    def signalled(*a, **kw):
        for n, batch in enumerate(real(*a, **kw)):
            if n == 2:
                signal.raise_signal(signal.SIGTERM)
            yield batch

    monkeypatch.setattr(pipeline, "_batches", signalled)
    assert main(args) == 143
    assert "SIGTERM" in capsys.readouterr().err
    status = _statuses(out / "sources.sqlite")
    assert sorted(status.values()).count("done") == 6 and len(_keys(out)) == 6
    monkeypatch.setattr(pipeline, "_batches", real)
    assert main(args) == 0
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 10


def test_measures_in_json_and_lean_mode(tmp_path):
    """Whole-image crops carry sharpness + pHash + dHash by default; filter.measures=false stores nulls."""
    import imagehash

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(src / f"p{i}.png")

    def run(out, measures):
        cfg = _cfg(out, from_dir=str(src))
        cfg.detect.backend = "none"
        cfg.filter.measures = measures
        run_curate(cfg, progress=False)
        return _samples(out)

    full = run(tmp_path / "full", True)
    assert len(full) == 4
    for s in full:
        meta, crop = s["json"], s["jpg"]
        assert meta["sharpness"] > 0
        # stored pHash is the reduced-thumbnail variant: within 2 bits of imagehash's own
        stored = imagehash.hex_to_hash(meta["phash"])
        assert stored - imagehash.phash(crop) <= 4  # crop was re-encoded as JPEG after hashing
        assert len(meta["dhash"]) == 16
    lean = run(tmp_path / "lean", False)
    assert [s["json"]["phash"] for s in lean] == [None] * 4
    assert [s["json"]["sharpness"] for s in lean] == [None] * 4
    assert [s["__key__"] for s in lean] == [s["__key__"] for s in full]


def test_detector_workers_give_identical_shards(shared_data, tmp_path):
    """Batches detected side by side still reach the shards in input order, byte for byte, and
    the run records how busy its detector workers were."""
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted((shared_data / "yalefaces").glob("*.gif"))[:10]:
        (src / p.name).symlink_to(p)
    (src / "t1.jpg").symlink_to(shared_data / "photos" / "t1.jpg")

    def run(out, workers, isolate="off"):
        cfg = _cfg(out, from_dir=str(src))
        cfg.detect.batch_size, cfg.detect.min_face_px, cfg.detect.workers = 2, 60, workers
        cfg.detect.isolate = isolate
        # one torch thread everywhere: oneDNN's convolutions round differently with 1 and 2
        # intra-op threads on some CPUs (an AMD EPYC moved a landmark by 2e-5 px, one crop byte),
        # and by default 1 worker gets every core while 3 workers get one each
        cfg.detect.threads = 1
        cfg.download.dedupe = False
        run_curate(cfg, progress=False)
        return [(s["__key__"], s["jpg"].tobytes()) for s in _samples(out)], json.loads((out / "stats.json").read_text())

    one, stats_one = run(tmp_path / "one", 1)
    three, stats_three = run(tmp_path / "three", 3)
    assert len(one) == 16 and one == three  # 10 Yale faces + 6 in t1
    isolated, stats_isolated = run(tmp_path / "isolated", 1, isolate="on")  # the CUDA default: own process
    assert isolated == one and stats_isolated["last_run"]["detect_workers"] == 2
    assert stats_three["last_run"]["detect_workers"] == 3 and stats_one["last_run"]["detect_workers"] == 1
    assert 0 < stats_three["last_run"]["detector_busy"] <= 1 and stats_three["last_run"]["detect_s"] > 0


def _detector_failing_at_call(monkeypatch, n: int, message: str):
    """Make MTCNN's n-th `detect` call raise (a dying detector); returns the real method."""
    from facesift.curate.detect import MTCNNDetector

    real, calls = MTCNNDetector.detect, [0]

    def flaky(self, images):
        calls[0] += 1
        if calls[0] == n:
            raise RuntimeError(message)
        return real(self, images)

    monkeypatch.setattr(MTCNNDetector, "detect", flaky)
    return real


def test_a_detector_error_stops_the_run_and_loses_nothing(shared_data, tmp_path, monkeypatch):
    """A detector failure (CUDA out of memory, a broken model) is not one photo's problem: the run
    stops, nothing is marked failed, and the same command then finishes every photo once."""
    from facesift.curate.detect import MTCNNDetector

    src = tmp_path / "src"
    src.mkdir()
    for p in sorted((shared_data / "yalefaces").glob("*.gif"))[:8]:
        (src / p.name).symlink_to(p)
    cfg = _cfg(tmp_path / "out", from_dir=str(src))
    cfg.detect.batch_size, cfg.detect.min_face_px, cfg.detect.workers = 2, 60, 2
    cfg.download.dedupe = False
    real = _detector_failing_at_call(monkeypatch, 3, "CUDA out of memory (simulated)")
    with pytest.raises(RuntimeError, match="writer thread failed: RuntimeError: CUDA out of memory"):
        run_curate(cfg, progress=False)
    assert "failed" not in _statuses(tmp_path / "out" / "sources.sqlite").values()
    monkeypatch.setattr(MTCNNDetector, "detect", real)
    run_curate(cfg, progress=False)
    keys = _keys(tmp_path / "out")
    assert len(keys) == len(set(keys)) == 8
    assert set(_statuses(tmp_path / "out" / "sources.sqlite").values()) == {"done"}


def test_rejection_counts_survive_a_crash_exactly(shared_data, tmp_path, monkeypatch):
    """Per-filter rejection totals are stored with each photo's status, so a run that dies with
    processed photos in its open shard, then re-runs them, counts each photo's rejects once."""
    from facesift.curate.detect import MTCNNDetector

    src = tmp_path / "src"
    src.mkdir()
    for name in ("a1.jpg", "a2.jpg", "a3.jpg"):  # three photos of 6 faces each; max_faces keeps 2
        (src / name).symlink_to(shared_data / "photos" / "t1.jpg")
    for p in sorted((shared_data / "yalefaces").glob("*.gif"))[:5]:
        (src / p.name).symlink_to(p)
    cfg = _cfg(tmp_path / "out", from_dir=str(src))
    cfg.detect.batch_size, cfg.detect.min_face_px, cfg.detect.workers = 2, 60, 2  # errors reach the sink
    cfg.download.dedupe = False
    cfg.filter.max_faces = 2
    cfg.shards.maxcount = 3  # a1 | a2 | a3 + one Yale face ...: the crash drops a3's open shard
    real = _detector_failing_at_call(monkeypatch, 3, "detector died (simulated)")
    with pytest.raises(RuntimeError, match="detector died"):
        run_curate(cfg, progress=False)
    statuses = _statuses(tmp_path / "out" / "sources.sqlite")
    assert statuses["a1.jpg"] == statuses["a2.jpg"] == "done" and statuses["a3.jpg"] == "pending"
    monkeypatch.setattr(MTCNNDetector, "detect", real)
    run_curate(cfg, progress=False)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rejected_total"] == {"max_faces": 12}  # 4 per t1 copy, each counted once
    assert stats["faces_total"] == stats["samples"] == len(_keys(tmp_path / "out")) == 3 * 2 + 5
    ledger = tmp_path / "out" / "sources.sqlite"
    assert json.loads(_row(ledger, "a3.jpg")["rejected"]) == {"max_faces": 4}
    assert _row(ledger, "a1.jpg")["status"] == "done"
    with Catalog(ledger) as cat:
        assert cat.rejected_totals() == {"max_faces": 12}


def test_a_damaged_shard_met_in_recovery_is_a_warning_not_a_crash(tmp_path, monkeypatch, caplog):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(2)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"

    def cfg():
        c = _cfg(out, from_dir=str(src))
        c.detect.backend = "none"
        c.shards.maxcount = 5
        return c

    original = Catalog.set_status_many

    def crash_on_done(self, updates):
        if any(u[1] == "done" for u in updates):
            raise OSError("simulated crash")
        return original(self, updates)

    monkeypatch.setattr(Catalog, "set_status_many", crash_on_done)
    with pytest.raises(RuntimeError, match="writer thread failed"):
        run_curate(cfg(), progress=False)
    monkeypatch.setattr(Catalog, "set_status_many", original)
    (shard,) = out.glob("faces-*.tar")          # complete, its photos still pending ...
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])   # ... and then damaged on disk
    counts = run_curate(cfg(), progress=False)
    assert "damaged shard" in caplog.text
    assert counts.recovered < 5
    assert set(_statuses(out / "sources.sqlite").values()) == {"done"}
