"""Which photos a curate run takes: its `--part` slice of the pending rows, `--retry-failed`, and the
hashes of photos already curated (exact duplicates are skipped)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from facesift.shards.split import key_score


def in_part(photo_id: str, part: tuple[int, int] | None, seed: int = 0) -> bool:
    """Deterministic slice membership by photo-id hash."""
    if part is None:
        return True
    k, n = part
    return int(key_score(str(photo_id), seed) * n) == k


def requeue_failed(catalog, part: tuple[int, int] | None, seed: int) -> int:
    """`--retry-failed`: put this part's failed photos (timeouts, 5xx ...) back to pending.
    Their sha256 stays: for a folder file it is the listed bytes, which tells a changed file."""
    failed = [(r["id"], r["sha256"]) for r in catalog.all_photos()
              if r["status"] == "failed" and in_part(str(r["id"]), part, seed)]
    if failed:
        catalog.set_status_many([(pid, "pending", None, sha) for pid, sha in failed])
    return len(failed)


def work_rows(catalog, part: tuple[int, int] | None, seed: int, limit: int) -> list[dict]:
    rows = [r for r in catalog.pending() if in_part(str(r["id"]), part, seed)]
    return rows[:limit] if limit else rows


def known_hashes(catalog_path: Path) -> dict[str, str]:
    """sha256 → photo id of photos already curated (done or no_face), for exact-duplicate skips."""
    con = sqlite3.connect(f"{Path(catalog_path).resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        rows = con.execute("SELECT sha256, id FROM photos WHERE sha256 IS NOT NULL "
                           "AND status IN ('done', 'no_face') ORDER BY id").fetchall()
    finally:
        con.close()
    out: dict[str, str] = {}
    for sha, pid in rows:
        out.setdefault(sha, pid)
    return out
