"""The catalog: one SQLite file that is both the crawl ledger and the curate work queue.

Photo id is the primary key, so overlapping date windows, repeated pages and re-runs dedupe
for free (INSERT OR IGNORE). WAL mode lets other processes read (`facesift catalog stats`)
while one writer works; every write is one short transaction, so a `kill -9` loses at most the
transaction in flight. The `windows` table records which (query, filter, date window) were
crawled completely, so a re-run skips them. The `files` table caches the content hash of
each file of a `--from-dir` folder by (size, mtime), so listing a folder again reads only the
files that changed (sources.py). The API key and secret are never stored here.
"""
from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from facesift.curate.reasons import checked, classify, ranked

STATUSES = ("pending", "done", "no_face", "failed", "skipped")
REASON_STATUSES = ("failed", "skipped")  # the statuses whose `error` has a category (`reason`)

PHOTO_COLUMNS = ("id", "owner", "ownername", "license", "title", "tags", "dateupload", "url",
                 "width", "height", "query", "source", "status", "error", "attempts", "sha256",
                 "rejected", "reason", "updated_at")
WINDOW_COLUMNS = ("query", "filter", "min_date", "max_date", "status", "total", "children",
                  "photos", "calls", "error", "updated_at")
# Window statuses: done (all pages committed), split (children cover it), capped (one second
# holds more than the API returns: paged up to the cap), failed (retries exhausted; re-run retries).
WINDOW_STATUSES = ("done", "split", "capped", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    owner TEXT,
    ownername TEXT,
    license INTEGER,
    title TEXT,
    tags TEXT,
    dateupload INTEGER,
    url TEXT,
    width INTEGER,
    height INTEGER,
    query TEXT,
    source TEXT DEFAULT 'flickr',
    status TEXT DEFAULT 'pending',
    error TEXT,
    attempts INTEGER DEFAULT 0,
    sha256 TEXT,
    updated_at REAL,
    rejected TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS photos_status ON photos(status);
CREATE TABLE IF NOT EXISTS files (
    uri TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    query TEXT NOT NULL,
    filter TEXT NOT NULL,
    min_date INTEGER NOT NULL,
    max_date INTEGER NOT NULL,
    status TEXT NOT NULL,
    total INTEGER,
    children INTEGER,
    photos INTEGER,
    calls INTEGER,
    error TEXT,
    updated_at REAL,
    PRIMARY KEY (query, filter, min_date, max_date)
);
"""

_INSERT_COLUMNS = PHOTO_COLUMNS[:-1]  # updated_at is set here


class Catalog:
    """An open catalog file. Writes are serialised by an internal lock as well as by callers."""

    def __init__(self, path: str | Path, timeout: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per call.
        self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (only power loss can drop the last
            # commits), and avoids an fsync per page of results.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(photos)")}
            for column in ("rejected", "reason"):  # a catalog written before the column existed
                if column not in columns:
                    self._conn.execute(f"ALTER TABLE photos ADD COLUMN {column} TEXT")

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- photos -----------------------------------------------------------------------------
    def add_photos(self, rows: list[dict]) -> int:
        """Insert new photos (status 'pending'); ids already present are left untouched.

        Returns how many were new. Rows need only `id`; a local folder or URL list passes
        `id`, `url` and `source`.
        """
        now = time.time()
        values = []
        for row in rows:
            if not row.get("id"):
                raise ValueError(f"catalog row without an id: {row!r}")
            unknown = set(row) - set(PHOTO_COLUMNS)
            if unknown:
                raise ValueError(f"unknown catalog column(s) {sorted(unknown)}")
            full = {"source": "flickr", "status": "pending", "attempts": 0, **row}
            if full["status"] not in STATUSES:
                raise ValueError(f"bad status {full['status']!r}; one of {STATUSES}")
            values.append(tuple(full.get(c) for c in _INSERT_COLUMNS) + (now,))
        if not values:
            return 0
        sql = (f"INSERT OR IGNORE INTO photos ({', '.join(PHOTO_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(PHOTO_COLUMNS))})")
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(sql, values)
            return conn.total_changes - before

    def pending(self, limit: int | None = None) -> list[dict]:
        sql = "SELECT * FROM photos WHERE status = 'pending' ORDER BY id"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        return [dict(r) for r in self._query(sql, params)]

    def set_status_many(self, updates: list[tuple]) -> None:
        """Record outcomes (photo_id, status, error, sha256[, rejected[, reason]]) in one
        transaction; counts attempts. `rejected` ({filter: faces}) is the photo's faces that
        curate's filters dropped; stored with the status so totals never count a photo twice.
        `reason` is the error's category (reasons.py); without one it is classified from the
        error text, so every failed or skipped row has a category."""
        now = time.time()
        rows = []
        for pid, status, error, sha, *rest in updates:
            if status not in STATUSES:
                raise ValueError(f"bad status {status!r}; one of {STATUSES}")
            rejected = rest[0] if rest else None
            reason = (checked(rest[1] if len(rest) > 1 else None, error)
                      if error and status in REASON_STATUSES else None)
            rows.append((status, error, sha, now, json.dumps(dict(sorted(rejected.items()))) if rejected else None,
                         reason, pid))
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE photos SET status = ?, error = ?, sha256 = ?, attempts = attempts + 1, "
                "updated_at = ?, rejected = ?, reason = ? WHERE id = ?", rows)

    def reason_counts(self, statuses: Iterable[str] = REASON_STATUSES) -> dict[str, dict[str, int]]:
        """{status: {reason: photos}} for the photos of `statuses`, largest first. Rows from
        before the `reason` column get the category of their error text (or `other`)."""
        qs = list(statuses)
        rows = self._query(
            f"SELECT status, reason, CASE WHEN reason IS NULL THEN error END AS error, COUNT(*) AS n "
            f"FROM photos WHERE status IN ({', '.join('?' * len(qs))}) "
            f"GROUP BY status, reason, CASE WHEN reason IS NULL THEN error END", qs)
        out: dict[str, collections.Counter] = {s: collections.Counter() for s in qs}
        for r in rows:
            out[r["status"]][r["reason"] or classify(r["error"]) or "other"] += r["n"]
        return {s: ranked(c) for s, c in out.items() if c}

    def reason_examples(self, per_reason: int = 3, statuses: Iterable[str] = REASON_STATUSES
                        ) -> dict[str, dict[str, list[dict]]]:
        """{status: {reason: [{id, error}, ...]}}: up to `per_reason` photos of each reason, in
        id order, so someone can open the photos behind a count."""
        qs = list(statuses)
        out: dict[str, dict[str, list[dict]]] = {}
        with self._lock:
            cursor = self._conn.execute(
                f"SELECT id, status, reason, error FROM photos WHERE status IN ({', '.join('?' * len(qs))}) "
                f"ORDER BY id", qs)
            for row in cursor:
                reason = row["reason"] or classify(row["error"]) or "other"
                examples = out.setdefault(row["status"], {}).setdefault(reason, [])
                if len(examples) < per_reason:
                    examples.append({"id": row["id"], "error": row["error"]})
        return out

    def rejected_totals(self, select: Callable[[str], bool] | None = None) -> collections.Counter:
        """Faces dropped per filter, summed over the photos (those `select` keeps)."""
        totals: collections.Counter = collections.Counter()
        for row in self._query("SELECT id, rejected FROM photos WHERE rejected IS NOT NULL"):
            if select is None or select(row["id"]):
                totals.update(json.loads(row["rejected"]))
        return totals

    def get(self, photo_id: str) -> dict | None:
        rows = self._query("SELECT * FROM photos WHERE id = ?", (photo_id,))
        return dict(rows[0]) if rows else None

    def counts_by(self, column: str) -> dict:
        """{value: number of photos}, largest first."""
        if column not in PHOTO_COLUMNS:
            raise ValueError(f"unknown column {column!r}; one of {PHOTO_COLUMNS}")
        rows = self._query(f"SELECT {column} AS k, COUNT(*) AS n FROM photos GROUP BY {column} "
                           f"ORDER BY n DESC, k")
        return {r["k"]: r["n"] for r in rows}

    def count(self, queries: Iterable[str] | None = None) -> int:
        """Number of photos, optionally only those catalogued by one of `queries`."""
        if queries is None:
            return self._query("SELECT COUNT(*) FROM photos")[0][0]
        qs = list(queries)
        if not qs:
            return 0
        return self._query(f"SELECT COUNT(*) FROM photos WHERE query IN ({', '.join('?' * len(qs))})",
                           qs)[0][0]

    def all_photos(self) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM photos ORDER BY id")]

    # -- folder listings (sources.py) -------------------------------------------------------
    def file_hashes(self, uris: list[str]) -> dict[str, tuple[int, int, str]]:
        """{uri: (size, mtime_ns, sha256)} of the listed files whose hash is cached."""
        out: dict[str, tuple[int, int, str]] = {}
        for i in range(0, len(uris), 500):
            chunk = uris[i:i + 500]
            for r in self._query(f"SELECT uri, size, mtime_ns, sha256 FROM files WHERE uri IN "
                                 f"({', '.join('?' * len(chunk))})", chunk):
                out[r["uri"]] = (r["size"], r["mtime_ns"], r["sha256"])
        return out

    def remember_file_hashes(self, rows: list[tuple[str, int, int, str]]) -> None:
        """Cache (uri, size, mtime_ns, sha256) of files just hashed."""
        if rows:
            with self._transaction() as conn:
                conn.executemany("INSERT OR REPLACE INTO files (uri, size, mtime_ns, sha256) "
                                 "VALUES (?, ?, ?, ?)", rows)

    def has_path_ids(self) -> bool:
        """Whether folder photos carry the old id form (their relative path, with its dot):
        ledgers written before ids were content-qualified, whose rows a re-run keeps using."""
        return bool(self._query("SELECT 1 FROM photos WHERE source = 'dir' AND instr(id, '.') > 0 LIMIT 1"))

    def unfinished_under(self, uri_prefix: str) -> list[dict]:
        """Folder photos under `uri_prefix` still to do or failed: the rows a new listing of
        that folder may have made stale (file changed or removed)."""
        return [dict(r) for r in self._query(
            "SELECT id, url, status, sha256 FROM photos WHERE source = 'dir' AND status IN ('pending', 'failed') "
            "AND substr(url, 1, ?) = ? ORDER BY id", (len(uri_prefix), uri_prefix))]

    # -- windows ----------------------------------------------------------------------------
    def get_window(self, query: str, filter_key: str, min_date: int, max_date: int) -> dict | None:
        rows = self._query("SELECT * FROM windows WHERE query = ? AND filter = ? AND min_date = ? "
                           "AND max_date = ?", (query, filter_key, min_date, max_date))
        return dict(rows[0]) if rows else None

    def set_window(self, query: str, filter_key: str, min_date: int, max_date: int, status: str,
                   total: int | None = None, children: int | None = None, photos: int | None = None,
                   calls: int | None = None, error: str | None = None) -> None:
        if status not in WINDOW_STATUSES:
            raise ValueError(f"bad window status {status!r}; one of {WINDOW_STATUSES}")
        with self._transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO windows ({', '.join(WINDOW_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(WINDOW_COLUMNS))})",
                (query, filter_key, min_date, max_date, status, total, children, photos, calls,
                 error, time.time()))

    def windows(self, query: str | None = None) -> list[dict]:
        if query is None:
            rows = self._query("SELECT * FROM windows ORDER BY query, min_date, max_date")
        else:
            rows = self._query("SELECT * FROM windows WHERE query = ? ORDER BY min_date, max_date",
                               (query,))
        return [dict(r) for r in rows]
