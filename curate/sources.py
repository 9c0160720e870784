"""Where curate's photos come from: a crawl catalog, a local folder, or a list of URLs.

All three end up as rows of the same SQLite catalog (for a folder or URL list, a ledger at
`<out>/sources.sqlite`), so every source gets the same statuses, resume and `--part` slicing.
Ids are stable: the crawl's photo id, a hash of the URL, or for a folder file its relative path
*and content* (`dir_photo_id`) — re-running picks up new files/URLs and skips those handled.

Folder ids, and why they look as they do:
- A shard key is `<photo_id>_<face>` and webdataset splits a member name at its first dot, so a
  path cannot be the key: sanitising it (`x.y.jpg` and `x-y.jpg` both `x-y-jpg`) merges files.
  The id is the sanitised path (readable) plus 16 hex of a hash of the exact relative path and
  the file's bytes: distinct for `.` vs `-`, `/` vs `-`, upper vs lower case, any unicode or
  non-UTF-8 name, and already key-safe, so `make_key` leaves it whole.
- The bytes are in it because a ledger is shared by every folder curated into one `--out`: a
  second folder (or an edited file) with the same relative path but other bytes is another
  photo, added beside the first; the same path with the same bytes is the same photo, already
  known. Hashes are cached by (size, mtime) in the ledger, so listing again reads only changes.
- Rows of an older ledger (id = relative path) are kept when the file at that path still has
  their bytes: a re-run resumes them instead of curating them again under a new id.
- A listed file still to do (or failed) whose bytes changed, or that is gone, is marked
  `skipped` (reason `changed or removed`): its new bytes come in under their own id. (A row's
  `sha256` is its file's hash from the listing on, so "changed" is exact.)
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import re
import logging
import os
from pathlib import Path
from typing import Iterator

from facesift.common.images import is_image_file
from facesift.curate.reasons import CHANGED
from facesift.shards.format import sanitize_key

log = logging.getLogger(__name__)

LEDGER_NAME = "sources.sqlite"
CHUNK = 10_000
ID_STEM = 48          # characters of the sanitised path kept in a folder id (its end: the file name)
ID_HASH = 16          # hex digits of the path+content hash: 64 bits
HASH_THREADS = 8      # hashlib releases the GIL: files are hashed side by side
CHANGED_MESSAGE = "no longer in the folder with these bytes (changed or removed); its current bytes are listed under their own id"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def walk_images(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative path) of every image file under `root`: recursive, sorted, hidden skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not is_image_file(name):
                continue
            path = Path(dirpath) / name
            yield path, path.relative_to(root).as_posix()


def readable(rel: str) -> str:
    """A relative path as text a catalog can store (a non-UTF-8 byte becomes `\\xNN`)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def dir_photo_id(rel: str, content: str) -> str:
    """`<sanitised path>-<16 hex>`: readable, key-safe, and distinct for every (path, bytes).

    `content` is the file's sha256 (or another token standing for its bytes); the hash covers
    the exact relative path as bytes, so names that sanitise alike stay apart.
    """
    digest = hashlib.sha256(os.fsencode(rel) + b"\0" + content.encode("ascii", "replace")).hexdigest()
    stem = sanitize_key(rel)[-ID_STEM:].lstrip("-_") or "x"
    return f"{stem}-{digest[:ID_HASH]}"


def _hash_file(path: Path) -> str | None:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def _contents(files: list[tuple[Path, str]], catalog, max_bytes: int,
              pool: cf.ThreadPoolExecutor) -> list[tuple[str, str | None]]:
    """(uri, content token) per file: the cached hash when size and mtime match, else hashed now.

    A file over the byte cap is not read (the download refuses it anyway): its token is its size
    and mtime. An unreadable one gets None (its download fails with the reason).
    """
    uris = [p.as_uri() for p, _ in files]
    cached = catalog.file_hashes(uris)
    tokens: list[str | None] = []
    todo: list[tuple[int, Path, int, int]] = []
    for i, ((path, _), uri) in enumerate(zip(files, uris)):
        try:
            st = path.stat()
        except OSError:
            tokens.append(None)
            continue
        hit = cached.get(uri)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            tokens.append(hit[2])
        elif st.st_size > max_bytes:
            tokens.append(f"oversize:{st.st_size}:{st.st_mtime_ns}")
        else:
            tokens.append(None)
            todo.append((i, path, st.st_size, st.st_mtime_ns))
    fresh = []
    for (i, _, size, mtime), sha in zip(todo, pool.map(_hash_file, [t[1] for t in todo])):
        tokens[i] = sha
        if sha is not None:
            fresh.append((uris[i], size, mtime, sha))
    catalog.remember_file_hashes(fresh)
    return list(zip(uris, tokens))


def dir_rows(root: str | Path, catalog, max_bytes: int = 30_000_000) -> Iterator[list[dict]]:
    """Catalog rows for every image file under `root`, in chunks (see the module doc for ids)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"--from-dir {root}: not a directory")
    legacy = catalog.has_path_ids()
    files = walk_images(root)
    with cf.ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="hash") as pool:
        while True:
            chunk = [f for _, f in zip(range(CHUNK), files)]
            if not chunk:
                return
            rows = []
            for (path, rel), (uri, token) in zip(chunk, _contents(chunk, catalog, max_bytes, pool)):
                title = readable(rel)
                pid = None
                if legacy:  # an older ledger's row for this very file and bytes keeps its id
                    old = catalog.get(title)
                    if old is not None and old["url"] == uri and old["sha256"] in (None, token):
                        pid = title
                row = {"id": pid or dir_photo_id(rel, token or "unreadable"), "url": uri,
                       "source": "dir", "title": title}
                if token and _SHA256.match(token):
                    row["sha256"] = token
                rows.append(row)
            yield rows


def mark_changed(catalog, root: Path) -> int:
    """Rows under `root` still pending or failed whose file is gone, or whose bytes are no
    longer those they were listed with (the hash cache was just refreshed by the listing),
    become `skipped`: curating them would take the file's new bytes under the old id."""
    from facesift.curate.download import local_path

    prefix = root.as_uri().rstrip("/") + "/"
    rows = catalog.unfinished_under(prefix)
    stale = []
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i:i + CHUNK]
        cached = catalog.file_hashes([r["url"] for r in chunk])
        for r in chunk:
            path = local_path(r["url"])
            now = cached.get(r["url"])
            if path is None or not path.exists() or (r["sha256"] and now and now[2] != r["sha256"]):
                stale.append(r["id"])
    if stale:
        catalog.set_status_many([(pid, "skipped", CHANGED_MESSAGE, None, None, CHANGED) for pid in stale])
    return len(stale)


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


def check_source(cfg) -> None:
    """Exactly one source, and it exists: checked before the run touches its output."""
    given = [name for name in ("catalog", "from_dir", "from_urls") if getattr(cfg, name)]
    if len(given) != 1:
        raise ValueError("give exactly one source: --catalog, --from-dir or --from-urls "
                         f"(got {', '.join(given) or 'none'})")
    if cfg.catalog and not Path(cfg.catalog).is_file():
        raise FileNotFoundError(f"--catalog {cfg.catalog}: no such file (run `facesift crawl` first)")
    if cfg.from_dir and not Path(cfg.from_dir).is_dir():
        raise FileNotFoundError(f"--from-dir {cfg.from_dir}: not a directory")
    if cfg.from_urls and not Path(cfg.from_urls).is_file():
        raise FileNotFoundError(f"--from-urls {cfg.from_urls}: no such file")


def open_source(cfg) -> Path:
    """The catalog file curate works from; a folder or URL list is first added to the ledger.

    Exactly one of `cfg.catalog`, `cfg.from_dir`, `cfg.from_urls` must be set. The log line says
    what the listing found: how many inputs, how many new, how many already in the ledger.
    """
    from facesift.curate.catalog import Catalog

    check_source(cfg)
    if cfg.catalog:
        return Path(cfg.catalog)
    ledger = Path(cfg.out) / LEDGER_NAME
    added = seen = changed = 0
    with Catalog(ledger) as cat:
        if cfg.from_dir:
            for chunk in dir_rows(cfg.from_dir, cat, cfg.download.max_bytes):
                added += cat.add_photos(chunk)
                seen += len(chunk)
            changed = mark_changed(cat, Path(cfg.from_dir).resolve())
        else:
            chunk = []
            for row in iter_urls(cfg.from_urls):
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    added, seen, chunk = added + cat.add_photos(chunk), seen + len(chunk), []
            added += cat.add_photos(chunk)
            seen += len(chunk)
    known = seen - added
    log.info("%s: %d inputs: %d new, %d already in %s (same %s)%s", cfg.from_dir or cfg.from_urls, seen,
             added, known, ledger, "path and bytes" if cfg.from_dir else "URL",
             f"; {changed} listed before and since changed or removed: skipped" if changed else "")
    return ledger
