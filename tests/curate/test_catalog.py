"""The catalog contract other stages build on: dedupe, work queue, statuses, WAL readers."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from facesift.curate.catalog import Catalog


def _row(i: int, **kw) -> dict:
    return {"id": f"{i:05d}", "owner": f"o{i % 3}", "license": i % 11, "url": f"http://x/{i}.jpg",
            "query": "faces", **kw}


def test_add_photos_dedupes_and_defaults(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        assert cat.add_photos([_row(i) for i in range(5)]) == 5
        # Same ids again (with different data) are ignored, new ones inserted.
        assert cat.add_photos([_row(i, owner="other") for i in range(3, 8)]) == 3
        assert cat.count() == 8
        r = cat.get("00003")
        assert r["owner"] == "o0" and r["status"] == "pending" and r["source"] == "flickr"
        assert r["attempts"] == 0 and r["updated_at"] > 0
        assert cat.get("nope") is None
        # Non-Flickr sources need only id, url and source.
        assert cat.add_photos([{"id": "local-a", "url": "/tmp/a.jpg", "source": "folder"}]) == 1
        assert cat.get("local-a")["license"] is None
        assert cat.add_photos([]) == 0
        with pytest.raises(ValueError):
            cat.add_photos([{"url": "no id"}])
        with pytest.raises(ValueError):
            cat.add_photos([{"id": "x", "bogus": 1}])


def test_work_queue_and_statuses(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        cat.add_photos([_row(i) for i in (4, 2, 9, 1)])
        assert [r["id"] for r in cat.pending()] == ["00001", "00002", "00004", "00009"]
        assert [r["id"] for r in cat.pending(limit=2)] == ["00001", "00002"]
        cat.set_status_many([("00001", "done", None, "ab" * 32), ("00002", "failed", "HTTP 404", None)])
        cat.set_status_many([("00002", "no_face", None, "cd" * 32)])
        assert [r["id"] for r in cat.pending()] == ["00004", "00009"]
        one, two = cat.get("00001"), cat.get("00002")
        assert one["status"] == "done" and one["sha256"] == "ab" * 32 and one["attempts"] == 1
        assert two["status"] == "no_face" and two["attempts"] == 2 and two["error"] is None
        assert cat.counts_by("status") == {"pending": 2, "done": 1, "no_face": 1}
        with pytest.raises(ValueError):
            cat.set_status_many([("00004", "weird", None, None)])
        with pytest.raises(ValueError):
            cat.counts_by("id; DROP TABLE photos")
        assert cat.get("00004")["status"] == "pending"  # the bad batch changed nothing


def test_windows_table(tmp_path):
    with Catalog(tmp_path / "c.sqlite") as cat:
        assert cat.get_window("faces", "text;license=4", 0, 99) is None
        cat.set_window("faces", "text;license=4", 0, 99, "failed", error="HTTP 503")
        cat.set_window("faces", "text;license=4", 0, 99, "done", total=12, photos=12, calls=1)
        w = cat.get_window("faces", "text;license=4", 0, 99)
        assert w["status"] == "done" and w["total"] == 12 and w["error"] is None
        assert len(cat.windows("faces")) == 1
        with pytest.raises(ValueError):
            cat.set_window("faces", "f", 0, 1, "half")


def test_wal_and_reader_in_another_process(tmp_path):
    path = tmp_path / "c.sqlite"
    with Catalog(path) as cat:
        cat.add_photos([_row(i) for i in range(10)])
        assert cat._query("PRAGMA journal_mode")[0][0] == "wal"
        # While this writer holds the file open, another process reads a consistent count.
        out = subprocess.run([sys.executable, "-c",
                              "import sys; from facesift.curate.catalog import Catalog;"
                              "print(Catalog(sys.argv[1]).count())", str(path)],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "10"
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 10


def test_rejections_stored_with_status_and_old_catalogs_upgrade(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)  # a catalog written before the `rejected` column existed
    conn.execute("CREATE TABLE photos (id TEXT PRIMARY KEY, owner TEXT, ownername TEXT, license INTEGER, "
                 "title TEXT, tags TEXT, dateupload INTEGER, url TEXT, width INTEGER, height INTEGER, "
                 "query TEXT, source TEXT DEFAULT 'flickr', status TEXT DEFAULT 'pending', error TEXT, "
                 "attempts INTEGER DEFAULT 0, sha256 TEXT, updated_at REAL)")
    conn.execute("INSERT INTO photos (id, url, status) VALUES ('old', 'http://x/old.jpg', 'done')")
    conn.commit()
    conn.close()
    with Catalog(path) as cat:
        assert cat.get("old")["rejected"] is None and cat.get("old")["status"] == "done"
        cat.add_photos([_row(i) for i in range(3)])
        cat.set_status_many([("00000", "done", None, "s0", {"max_faces": 4, "small": 1}),
                             ("00001", "no_face", "none passed", "s1", {"small": 2}),
                             ("00002", "failed", "HTTP 404", None)])
        assert cat.rejected_totals() == {"max_faces": 4, "small": 3}
        assert cat.rejected_totals(lambda pid: pid != "00000") == {"small": 2}
        cat.set_status_many([("00001", "pending", None, None)])  # re-queued: its old counts go
        assert cat.rejected_totals() == {"max_faces": 4, "small": 1}
