"""Skips and failures counted by reason where people look (issue 12): the summary line,
stats.json and `facesift catalog stats` (with example photos); old catalogs read through the
text-to-category mapping."""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image

from facesift.cli import main
from facesift.curate import reasons as R
from facesift.curate.catalog import Catalog

FAILED_LINE = "failed=4 (truncated 1, not an image 1, empty 1, too many pixels 1)"


def _bad_folder(src: Path) -> Path:
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(src / f"good{i}.png")
    (src / "good_copy.png").write_bytes((src / "good1.png").read_bytes())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(buf, "JPEG")
    (src / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (src / "notes.jpg").write_text("this is not a photo")
    (src / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (100, 100)).save(src / "big.png")  # 10,000 pixels > the 5,000 cap below
    return src


def _curate(src: Path, out: Path) -> list[str]:
    return ["curate", "--from-dir", str(src), "--out", str(out), "--detector", "none", "--crop-size", "32",
            "--no-progress", "--set", "download.max_pixels=5000"]


def test_reasons_in_summary_stats_and_catalog_stats(tmp_path, capsys):
    src, out = _bad_folder(tmp_path / "src"), tmp_path / "out"
    assert main(_curate(src, out)) == 0
    line = capsys.readouterr().out
    assert FAILED_LINE in line and "skipped=1 (exact duplicate 1)" in line, line

    expected = {"failed": {"empty": 1, "not an image": 1, "too many pixels": 1, "truncated": 1},
                "skipped": {"exact duplicate": 1}}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["reasons"] == expected and stats["last_run"]["reasons"] == expected

    ledger = out / "sources.sqlite"
    with Catalog(ledger) as cat:
        rows = {r["title"]: r for r in cat.all_photos()}
    assert rows["truncated.jpg"]["reason"] == "truncated" and "truncated" in rows["truncated.jpg"]["error"]
    assert rows["big.png"]["reason"] == "too many pixels" and rows["good0.png"]["reason"] is None

    assert main(["catalog", "stats", "--catalog", str(ledger)]) == 0
    text = capsys.readouterr().out
    assert "failed: 4 (truncated 1, not an image 1, empty 1, too many pixels 1)" in text
    assert "skipped: 1 (exact duplicate 1)" in text

    assert main(["catalog", "stats", "--catalog", str(ledger), "--reasons"]) == 0
    text = capsys.readouterr().out
    assert f"    {rows['empty.jpg']['id']}: empty body" in text
    assert f"    {rows['notes.jpg']['id']}: not an image: unknown format" in text

    assert main(["catalog", "stats", "--catalog", str(ledger), "--json", "--reasons", "--examples", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reasons"] == expected
    assert data["reason_examples"]["failed"]["truncated"] == [{"id": rows["truncated.jpg"]["id"],
                                                               "error": rows["truncated.jpg"]["error"]}]
    # a re-run with nothing to do still says nothing failed in this run
    assert main(_curate(src, out)) == 0
    assert "photos=0, done=0, no_face=0, failed=0, skipped=0" in capsys.readouterr().out


def test_old_catalogs_are_read_by_their_messages(tmp_path, capsys):
    """A catalog from before the `reason` column: its free text maps to a category or `other`."""
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE photos (id TEXT PRIMARY KEY, owner TEXT, ownername TEXT, license INTEGER, "
                "title TEXT, tags TEXT, dateupload INTEGER, url TEXT, width INTEGER, height INTEGER, query TEXT, "
                "source TEXT DEFAULT 'flickr', status TEXT DEFAULT 'pending', error TEXT, "
                "attempts INTEGER DEFAULT 0, sha256 TEXT, updated_at REAL)")
    old = [("1", "failed", "HTTP 404"), ("2", "failed", "HTTP 503 (after 4 attempts)"),
           ("3", "failed", "timeout: read timed out (after 4 attempts)"), ("4", "failed", "something odd"),
           ("5", "failed", "cannot decode jpeg: OSError: image file is truncated (3 bytes not processed)"),
           ("6", "skipped", "exact duplicate of 1"), ("7", "failed", "HTTP 404"), ("8", "done", None)]
    con.executemany("INSERT INTO photos (id, status, error) VALUES (?, ?, ?)", old)
    con.commit()
    con.close()
    with Catalog(path) as cat:
        assert cat.reason_counts() == {
            "failed": {"http error": 2, "other": 1, "server error": 1, "timeout": 1, "truncated": 1},
            "skipped": {"exact duplicate": 1}}
        assert cat.reason_examples(1)["failed"]["http error"] == [{"id": "1", "error": "HTTP 404"}]
    assert main(["catalog", "stats", "--catalog", str(path)]) == 0
    assert "failed: 6 (http error 2, truncated 1, server error 1, timeout 1, other 1)" in capsys.readouterr().out


def test_every_message_curate_writes_has_its_category():
    cases = {
        "empty body": R.EMPTY, "not an image: HTML/XML body": R.NOT_AN_IMAGE,
        "not an image: unknown format (first bytes 00)": R.NOT_AN_IMAGE,
        "too many pixels: 9x9 > 1 (decompression-bomb cap)": R.TOO_MANY_PIXELS, "too small: 3x3": R.TOO_SMALL,
        "too large: 31000000 bytes > 30000000": R.TOO_LARGE,
        "cannot decode png: OSError: image file is truncated": R.TRUNCATED,
        "truncated body: 10 of 20 bytes (after 4 attempts)": R.TRUNCATED,
        "cannot decode jpeg: SyntaxError: broken": R.CANNOT_DECODE, "HTTP 404": R.HTTP_ERROR,
        "HTTP 429 (after 4 attempts)": R.SERVER_ERROR, "more than 10 redirects": R.HTTP_ERROR,
        "timeout: x (after 2 attempts)": R.TIMEOUT, "connection error: refused (after 2 attempts)": R.CONNECTION,
        "bad URL: x": R.BAD_URL, "unsupported URL scheme: ftp://x": R.BAD_URL, "no URL": R.BAD_URL,
        "cannot read /x.jpg: Permission denied": R.UNREADABLE, "processing error: ValueError: x": R.PROCESSING,
        "exact duplicate of 123": R.DUPLICATE, "no longer in the folder with these bytes": R.CHANGED,
        "KeyError: 'x'": R.OTHER,
    }
    assert {m: R.classify(m) for m in cases} == cases
    assert set(cases.values()) <= set(R.REASONS) and R.classify(None) is None
    assert R.format_counts(3, {}) == "3"
