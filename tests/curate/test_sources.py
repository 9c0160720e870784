"""--from-dir identity (issue 12): keys injective over relative paths (defect 2), a second folder or
an edited file into the same --out added, never dropped (defect 3), older ledgers resumed."""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesift.cli import main
from facesift.curate.catalog import Catalog
from facesift.curate.config import AlignConfig, CurateConfig, DetectConfig, DownloadConfig
from facesift.curate.pipeline import run_curate
from facesift.curate.sources import dir_photo_id
from facesift.shards.format import make_key, sanitize_key
from facesift.shards.index import shard_urls
from facesift.shards.reader import iter_keys, iter_samples
from facesift.shards.verify import verify

# names that sanitise alike in pairs: '.' vs '-', '/' vs '-', unicode, case only, non-UTF-8 bytes
TRICKY = ["x.y.jpg", "x-y.jpg", "sub/a.jpg", "sub-a.jpg", "café.jpg", "cafè.jpg", "Case.jpg", "case.jpg",
          "dir.v1/p.png", "dir-v1-p.png"]
NON_UTF8 = b"n\xff.jpg"  # and its look-alike "n\u00ff.jpg" (ÿ), which sanitises the same


def _image(path: Path, seed: int, size=(40, 48)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
        path, format="PNG" if path.suffix == ".png" else "JPEG", quality=90)


def _cfg(out: Path, src: Path) -> CurateConfig:
    cfg = CurateConfig(out=str(out), from_dir=str(src), download=DownloadConfig(workers=2),
                       detect=DetectConfig(backend="none", device="cpu"), align=AlignConfig(crop_size=32))
    return cfg


def _keys(out: Path) -> list[str]:
    return [k for url in shard_urls(out) for k in iter_keys(url)]


def _titles(out: Path) -> list[str]:
    return sorted(json.loads(s["json"])["title"]
                  for url in shard_urls(out) for s in iter_samples(url, extensions={"json"}))


def test_dir_ids_are_injective_key_safe_and_stable():
    names = TRICKY + [os.fsdecode(NON_UTF8), "n\u00ff.jpg", "a" * 300 + ".jpg", "b" * 300 + ".jpg", ".jpg"]
    ids = [dir_photo_id(n, "0" * 64) for n in names]
    assert len(set(ids)) == len(ids)
    assert all(sanitize_key(i) == i and "." not in i and "/" not in i for i in ids)
    assert all(make_key(i, 3) == f"{i}_3" for i in ids)  # verify's check: the key is the id's
    assert ids == [dir_photo_id(n, "0" * 64) for n in names]  # deterministic
    assert ids[0].startswith("x-y-jpg-") and len(ids[-3]) < 80  # readable, bounded
    # the same path with other bytes is another photo
    assert dir_photo_id("x.y.jpg", "1" * 64) != dir_photo_id("x.y.jpg", "0" * 64)


def test_names_that_sanitise_alike_stay_apart(tmp_path, capsys):
    """Defect 2: `x.y.jpg` / `x-y.jpg`, `sub/a.jpg` / `sub-a.jpg` ... each get their own key; the
    shards have no duplicate members and pass `shards verify`."""
    src = tmp_path / "src"
    for i, name in enumerate(TRICKY):
        _image(src / name, i)
    if os.path.exists(src / "case.jpg") and os.path.samefile(src / "Case.jpg", src / "case.jpg"):
        pytest.skip("case-insensitive file system")
    _image(src / "n\u00ff.jpg", 50)
    with open(os.path.join(os.fsencode(src), NON_UTF8), "wb") as fh:
        buf = io.BytesIO()
        Image.fromarray(np.full((40, 48, 3), 77, np.uint8)).save(buf, "JPEG")
        fh.write(buf.getvalue())
    n = len(TRICKY) + 2
    out = tmp_path / "out"
    assert main(["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none",
                 "--crop-size", "32", "--no-progress"]) == 0
    assert f"photos={n}, done={n}" in capsys.readouterr().out
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == n and not any("." in k for k in keys)
    report = verify(str(out / "index.json"), progress=False)
    assert report.ok, [str(p) for p in report.problems]
    titles = _titles(out)
    assert "x.y.jpg" in titles and "sub/a.jpg" in titles and "n\\xff.jpg" in titles and len(titles) == n
    assert main(["shards", "verify", str(out / "index.json")]) == 0


def test_a_second_folder_is_added_and_nothing_is_dropped(tmp_path, caplog):
    """Defect 3: folder B into A's --out: a file with A's relative path but other bytes is a new
    photo; the same path with the same bytes is the same photo; the log line says which."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    for i in range(6):
        _image(a / f"p{i}.jpg", i)
        _image(b / f"p{i}.jpg", 100 + i if i < 4 else i)  # p0..p3 differ, p4 and p5 are A's bytes
    _image(b / "extra.jpg", 200)
    first = run_curate(_cfg(out, a), progress=False)
    assert first.photos == {"done": 6}
    with caplog.at_level(logging.INFO, logger="facesift.curate.sources"):
        second = run_curate(_cfg(out, b), progress=False)
    assert second.photos == {"done": 5}  # p0..p3 with B's bytes, and extra.jpg
    assert "7 inputs: 5 new, 2 already in" in caplog.text and "same path and bytes" in caplog.text
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 11
    titles = _titles(out)
    assert titles.count("p0.jpg") == 2 and titles.count("p5.jpg") == 1 and "extra.jpg" in titles
    assert verify(str(out / "index.json"), progress=False).ok
    # the same command again: nothing new, nothing lost
    assert sum(run_curate(_cfg(out, b), progress=False).photos.values()) == 0


def test_an_edited_file_is_a_new_photo_and_a_stale_listing_is_skipped(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(4):
        _image(src / f"p{i}.jpg", i)
    cfg = _cfg(out, src)
    cfg.limit = 1
    assert run_curate(cfg, progress=False).photos == {"done": 1}  # p0; p1..p3 listed, pending
    _image(src / "p0.jpg", 10)   # edited after it was curated: its new bytes are another photo
    _image(src / "p1.jpg", 11)   # edited while pending: the old listing must not take the new bytes
    (src / "p2.jpg").unlink()    # removed while pending
    cfg.limit = 0
    counts = run_curate(cfg, progress=False)
    assert counts.photos == {"done": 3}  # p0 (new bytes), p1 (new bytes), p3
    with Catalog(out / "sources.sqlite") as cat:
        rows = cat.all_photos()
    by_status = sorted((r["title"], r["status"], r["reason"]) for r in rows)
    assert by_status == [("p0.jpg", "done", None), ("p0.jpg", "done", None),
                         ("p1.jpg", "done", None), ("p1.jpg", "skipped", "changed or removed"),
                         ("p2.jpg", "skipped", "changed or removed"), ("p3.jpg", "done", None)]
    assert len(set(_keys(out))) == len(_keys(out)) == 4  # both p0s, the new p1, p3


def test_an_older_ledger_with_path_ids_is_resumed_not_redone(tmp_path):
    """Ledgers written before ids carried a hash (id = relative path) keep their rows: a done
    photo is not curated again and a pending one is finished under its old id."""
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(3):
        _image(src / f"old.{i}.jpg", i)
    import hashlib
    out.mkdir()
    with Catalog(out / "sources.sqlite") as cat:
        cat.add_photos([{"id": f"old.{i}.jpg", "url": (src / f"old.{i}.jpg").resolve().as_uri(), "source": "dir",
                         "title": f"old.{i}.jpg"} for i in range(3)])
        sha = hashlib.sha256((src / "old.0.jpg").read_bytes()).hexdigest()
        cat.set_status_many([("old.0.jpg", "done", None, sha)])
    cfg = _cfg(out, src)
    cfg.download.dedupe = False  # a re-curated old.0.jpg would not even be caught as a duplicate
    counts = run_curate(cfg, progress=False)
    assert counts.photos == {"done": 2}
    with Catalog(out / "sources.sqlite") as cat:
        assert sorted(r["id"] for r in cat.all_photos()) == ["old.0.jpg", "old.1.jpg", "old.2.jpg"]
    assert sorted(_keys(out)) == ["old-1-jpg_0", "old-2-jpg_0"]  # the old key form, still consistent
    assert verify(str(out / "index.json"), progress=False).ok
