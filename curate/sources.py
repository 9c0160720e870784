"""Where curate's photos come from: a crawl catalog, a local folder, or a list of URLs.

All three end up as rows of the same SQLite catalog (for a folder or URL list, a ledger at
`<out>/sources.sqlite`), so every source gets the same statuses, resume and `--part` slicing.
Ids are stable: the crawl's photo id, the file's path relative to the folder, or a hash of the
URL — re-running picks up new files/URLs and skips those already handled.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator

from facesift.common.images import is_image_file

log = logging.getLogger(__name__)

LEDGER_NAME = "sources.sqlite"
CHUNK = 10_000


def iter_dir(root: str | Path) -> Iterator[dict]:
    """Catalog rows for every image file under `root` (recursive, sorted, hidden entries skipped)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"--from-dir {root}: not a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not is_image_file(name):
                continue
            path = Path(dirpath) / name
            yield {"id": path.relative_to(root).as_posix(), "url": path.as_uri(), "source": "dir",
                   "title": name}


def url_id(url: str) -> str:
    return "u" + hashlib.sha1(url.encode("utf-8")).hexdigest()[:20]


def read_url_list(path: str | Path) -> list[str]:
    """URLs from a .txt (one a line, '#' comments), or a .csv/.parquet with a `url` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--from-urls {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".parquet"):
        import pandas as pd
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        if "url" not in frame.columns:
            raise ValueError(f"{path}: no `url` column (columns: {list(frame.columns)[:10]})")
        urls = [str(u).strip() for u in frame["url"].dropna()]
    else:
        urls = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [u for u in urls if u and not u.startswith("#")]


def iter_urls(path: str | Path) -> Iterator[dict]:
    for url in read_url_list(path):
        yield {"id": url_id(url), "url": url, "source": "urls"}


def open_source(cfg) -> Path:
    """The catalog file curate works from; a folder or URL list is first added to the ledger.

    Exactly one of `cfg.catalog`, `cfg.from_dir`, `cfg.from_urls` must be set.
    """
    from facesift.curate.catalog import Catalog

    given = [name for name in ("catalog", "from_dir", "from_urls") if getattr(cfg, name)]
    if len(given) != 1:
        raise ValueError("give exactly one source: --catalog, --from-dir or --from-urls "
                         f"(got {', '.join(given) or 'none'})")
    if cfg.catalog:
        path = Path(cfg.catalog)
        if not path.is_file():
            raise FileNotFoundError(f"--catalog {path}: no such file (run `facesift crawl` first)")
        return path
    ledger = Path(cfg.out) / LEDGER_NAME
    rows = iter_dir(cfg.from_dir) if cfg.from_dir else iter_urls(cfg.from_urls)
    added = seen = 0
    with Catalog(ledger) as cat:
        chunk: list[dict] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= CHUNK:
                added += cat.add_photos(chunk)
                seen += len(chunk)
                chunk = []
        added += cat.add_photos(chunk)
        seen += len(chunk)
    log.info("%s: %d inputs, %d new in %s", cfg.from_dir or cfg.from_urls, seen, added, ledger)
    return ledger
