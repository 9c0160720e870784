"""The Flickr crawler: keyword searches -> date-window bisection -> our own pager -> catalog rows.

Per query: probe the whole date range (page 1, 500 per page). A window over the 4,000 cap is
split (crawl_windows.py) and its probe discarded; a window within the cap keeps its probe as
page 1 and is paged to the end. Every page is committed to the catalog as it arrives (photo id
is the key, so overlaps and repeats dedupe), and a window is recorded as finished only after
all its pages are committed and the distinct ids they returned reach its `total`. Same-second
ties come back in an order that changes per request, so a page boundary inside one can repeat
a photo and skip another: windows are paged by date (each request starts at the oldest second
of the last page, so a tie is always served whole), one-second windows are re-read at other
page sizes, and a window still short after a bounded number of re-reads is left unfinished
(exit 1) for the next run. So `kill -9` at any moment loses at most one page and a re-run
skips finished windows. Queries run one after another (a photo found by two keywords keeps
the first one's name); windows of a query run on a few threads that share one token bucket.
"""
from __future__ import annotations

import collections
import logging
import random
import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from facesift.curate.catalog import Catalog
from facesift.curate.crawl_rows import photo_row
from facesift.curate.crawl_windows import (Page, Window, WindowRead, page_items, pages_needed,
                                           parse_date, parts_needed, reread_per_page, uncovered)
from facesift.curate.flickr import (DEFAULT_API_URL, URL_ENV, CredentialsError, describe, is_fatal,
                           is_retryable, make_client)
from facesift.curate.ratelimit import TokenBucket
from facesift.curate.retry import RetriesExhausted, retry_call
from facesift.common.config import bounded, secret
from facesift.common.logsetup import scrub

log = logging.getLogger(__name__)

DEFAULT_LICENSES = [4, 5, 7, 8, 9, 10]  # derivatives allowed: no ARR (0), no ND (3, 6), no NC
EXTRA_FIELDS = ["license", "owner_name", "date_upload", "tags", "o_dims"]


@dataclass
class RetryConfig:
    attempts: int = 6          # tries per API call before the window is left unfinished
    base_delay: float = 1.0    # seconds; doubles each retry, jittered, capped at max_delay
    max_delay: float = 60.0


@dataclass
class CrawlConfig:
    queries: list[str] = field(default_factory=lambda: ["faces"])
    search: str = "text"                 # "text" (title, description, tags) or "tags"
    licenses: list[int] = field(default_factory=lambda: list(DEFAULT_LICENSES))
    min_date: str = "2004-02-10"         # Flickr's launch
    max_date: str = ""                   # "" = end of today (UTC); fix it to make re-runs skip all
    limit: int = 0                       # stop once this many photos are catalogued for the queries (0: all)
    catalog: str = "work/catalog.sqlite"
    api_url: str = ""                    # "" = $FACESIFT_FLICKR_API_URL, else Flickr's own
    api_key: str | None = secret()       # prefer $FLICKR_API_KEY
    api_secret: str | None = secret()    # prefer $FLICKR_API_SECRET
    rate: float = 3600.0                 # API calls per hour, shared by all threads
    burst: float = 5.0                   # calls that may be saved up by an idle bucket
    threads: int = 4
    per_page: int = 500
    cap: int = 4000                      # results one query can reach
    fill: float = 0.75                   # split windows to about this share of the cap
    size: str = "c"                      # preferred image size suffix (c = 800 px)
    fallback_sizes: list[str] = field(default_factory=lambda: ["l", "z", "o"])
    max_pixels: int = 1600 * 1600        # fallback: largest offered size under this many pixels
    timeout: float = 30.0                # seconds per HTTP request
    retry: RetryConfig = field(default_factory=RetryConfig)
    reread_rounds: int = bounded(4, 0, 50)  # rounds a short window may re-read before it is left unfinished
    seed: int = 0                        # backoff jitter


class LimitReached(Exception):
    pass


class _Stopped(Exception):
    """Raised inside a worker when the crawl is stopping (limit reached or a fatal error)."""


def filter_key(cfg: CrawlConfig) -> str:
    """What, besides the query and dates, decides a window's results (part of its record)."""
    return f"{cfg.search};license={','.join(str(x) for x in sorted(set(cfg.licenses)))}"


def date_range(cfg: CrawlConfig) -> Window:
    import datetime as dt

    lo = parse_date(cfg.min_date)
    if cfg.max_date:
        hi = parse_date(cfg.max_date)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(cfg.max_date).strip()):  # a bare date: the whole day
            hi += 86399
    else:
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        hi = parse_date(today) + 86399
    if hi < lo:
        raise ValueError(f"max_date {cfg.max_date!r} is before min_date {cfg.min_date!r}")
    return Window(lo, hi)


class Crawler:
    """One crawl run: shared client factory, token bucket, counters and catalog."""

    def __init__(self, cfg: CrawlConfig, catalog: Catalog, key: str, api_secret: str,
                 api_url: str | None = None, progress: bool = True):
        if cfg.search not in ("text", "tags"):
            raise ValueError(f"search must be 'text' or 'tags', got {cfg.search!r}")
        if not 1 <= cfg.per_page <= 500:
            raise ValueError(f"per_page must be within 1..500, got {cfg.per_page}")
        self.cfg, self.catalog = cfg, catalog
        self.api_url = api_url or DEFAULT_API_URL
        self._key, self._secret = key, api_secret
        self.bucket = TokenBucket(cfg.rate, cfg.burst)
        self.rng = random.Random(cfg.seed)
        self.stats: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._stop = threading.Event()
        self._filter = filter_key(cfg)
        self._extras = ",".join(EXTRA_FIELDS + [f"url_{s}" for s in
                                                dict.fromkeys([cfg.size, *cfg.fallback_sizes])])
        self.progress = progress
        self._catalogued = 0
        self._bar = None
        self.failed_windows: list[tuple[str, Window, str]] = []
        self.incomplete_windows: list[tuple[str, Window, int, int]] = []  # (query, window, ids, total)
        self._roots: set[Window] = set()

    # -- API ---------------------------------------------------------------------------------
    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = make_client(self._key, self._secret, self.api_url, self.cfg.timeout)
            self._local.client = client
        return client

    def _count(self, **counts: int) -> None:
        with self._lock:
            self.stats.update(counts)

    def search(self, query: str, window: Window, page: int, per_page: int | None = None) -> dict:
        """One `flickr.photos.search` page, retried with backoff on transient failures."""
        params: dict[str, Any] = {
            self.cfg.search: query, "min_upload_date": window.lo, "max_upload_date": window.hi,
            "license": ",".join(str(x) for x in sorted(set(self.cfg.licenses))),
            "extras": self._extras, "per_page": per_page or self.cfg.per_page, "page": page,
            "sort": "date-posted-desc", "content_type": 1, "media": "photos"}

        def call() -> dict:
            if self._stop.is_set():
                raise _Stopped()
            self.bucket.acquire()
            self._count(api_calls=1)
            answer = self._client().photos.search(**params)
            if not isinstance(answer, dict) or "photos" not in answer:
                raise ValueError(f"unexpected answer without 'photos': {str(answer)[:200]}")
            return answer

        def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
            self._count(retries=1)
            log.info("%r %s page %d: %s (attempt %d/%d); retrying in %.1fs", query, window, page,
                     describe(exc), attempt, self.cfg.retry.attempts, delay)

        r = self.cfg.retry
        return retry_call(call, is_retryable, r.attempts, r.base_delay, r.max_delay, self.rng,
                          sleep=self._stop.wait, on_retry=on_retry)

    # -- one page, one window ----------------------------------------------------------------
    def _commit_page(self, query: str, photos: list[dict]) -> int:
        """Filter and catalogue one page of results; returns how many rows were new."""
        rows, reasons = [], collections.Counter()
        for photo in photos:
            row, reason = photo_row(photo, query, self.cfg.licenses, self.cfg.size,
                                    self.cfg.max_pixels)
            if row is None:
                reasons[f"rejected_{reason}"] += 1
            else:
                rows.append(row)
        with self._lock:  # one writer at a time; the limit is checked under the same lock
            if self.cfg.limit:
                room = self.cfg.limit - self._catalogued
                if room <= 0:
                    raise LimitReached()
                # Rows already in the catalog do not count against the room; trim only new ones.
                fresh = [r for r in rows if self.catalog.get(r["id"]) is None]
                if len(fresh) > room:
                    keep = {r["id"] for r in fresh[:room]}
                    trimmed = [r for r in rows if r["id"] in keep]
                    new = self.catalog.add_photos(trimmed)
                    self._catalogued += new
                    self.stats.update(pages=1, photos_new=new)
                    self._stop.set()
                    if self._bar is not None:
                        self._bar.update(new)
                    raise LimitReached()  # this window is not finished: not recorded as done
            new = self.catalog.add_photos(rows)
            self._catalogued += new
            self.stats.update(reasons)
            self.stats.update(pages=1, photos_new=new, duplicates=len(rows) - new)
            if self.cfg.limit and self._catalogued >= self.cfg.limit:
                self._stop.set()
        if self._bar is not None and self.cfg.limit:  # with a limit the bar counts new photos
            self._bar.update(new)
        return new

    def _take(self, query: str, answer: dict, read: WindowRead,
              parent: WindowRead | None = None) -> Page:
        """Commit one page and add its ids to the read; returns the page as served.

        Only photos this window's reads had not returned yet are filtered and committed: the
        overlap of paging by date and the repeats of re-reads are not new results, so they do
        not count as duplicates or rejections a second time."""
        page = page_items(answer)
        known = read.seen | parent.seen if parent is not None else read.seen
        fresh = {pid for pid, _ in page} - known
        self._commit_page(query, [p for p in answer["photos"].get("photo") or []
                                  if str(p["id"]) in fresh])
        read.seen |= {pid for pid, _ in page}
        read.calls += 1
        if self._bar is not None and not self.cfg.limit:  # without a limit: distinct results seen
            self._bar.update(len(fresh))
        return page

    def _read_pages(self, query: str, read: WindowRead, per_page: int, first: dict | None = None,
                    parent: WindowRead | None = None) -> None:
        """Read every reachable page of the window once by page number at `per_page` (page 1
        may be given); the total is the one its first page reported."""
        window = read.window
        answer = first if first is not None else self.search(query, window, 1, per_page)
        read.total = int(answer["photos"]["total"])
        self._take(query, answer, read, parent)
        for number in range(2, pages_needed(read.total, self.cfg.cap, per_page) + 1):
            self._take(query, self.search(query, window, number, per_page), read, parent)

    def _read_one_second(self, query: str, read: WindowRead, first: dict | None = None,
                         parent: WindowRead | None = None) -> None:
        """Read a window of one second, re-reading it whole until exact or out of rounds.

        Upload-date bounds have 1 s resolution, so such a window cannot be cut finer. Up to
        `per_page` photos it is one call and comes back whole; a bigger tie has page boundaries
        inside it, where the order changing between requests repeats some photos and skips
        others: each round re-reads it at a smaller page size (other boundaries) and keeps the
        union, for at most `reread_rounds` rounds. A second past the cap is known to be partial
        (only the first results are reachable), so it is not re-read.
        """
        self._read_pages(query, read, self.cfg.per_page, first, parent)
        for attempt in range(1, self.cfg.reread_rounds + 1):
            if not read.missing or read.total > self.cfg.cap:
                return
            log.debug("%r %s: %d of %d ids; re-reading it (round %d)", query, read.window,
                      len(read.seen), read.expected, attempt)
            self._read_pages(query, read, reread_per_page(self.cfg.per_page, attempt), None, parent)

    def _read_by_date(self, query: str, read: WindowRead, first: dict | None = None) -> None:
        """One pass over the window, paging by date instead of by page number.

        Each request after the first asks for page 1 of [lo, oldest second on the last page]:
        the tie at that second comes back whole at the top of the next page (its members
        already seen are the only overlap, usually one photo), so no page boundary falls inside
        a tie and none is skipped, at about the calls of numbered pages. A page all of one
        second cannot move the bound: that second is read on its own, then the pass goes on
        below it. Ends when a page holds all that is left (or nothing), so it always terminates:
        the upper bound goes down every request.
        """
        lo, hi = read.window.lo, read.window.hi
        answer = first if first is not None else self.search(query, read.window, 1)
        read.total = int(answer["photos"]["total"])
        while True:
            left = int(answer["photos"]["total"])
            page = self._take(query, answer, read)
            if not page or left <= len(page):
                return
            oldest = page[-1][1]
            if oldest is None or oldest > hi:  # no usable dates: page by number instead
                log.debug("%r %s: no upload dates on a page; paging by number", query, read.window)
                self._read_pages(query, read, self.cfg.per_page)
                return
            if page[0][1] == oldest:  # the bound cannot move: a page all of one second
                tie = WindowRead(Window(oldest, oldest), 0, self.cfg.cap)
                self._read_one_second(query, tie, parent=read)
                read.seen |= tie.seen
                read.calls += tie.calls
                oldest -= 1
            hi = oldest
            if hi < lo:
                return
            answer = self.search(query, Window(lo, hi), 1)

    def _read_window(self, query: str, read: WindowRead, first: dict) -> None:
        """Read a window until its distinct ids reach its total, or the rounds run out.

        A window longer than a second is read by date (no page boundary inside a tie); if it
        still comes back short (a total that counts a photo search never returns, a deletion
        between pages), each round reads it again from a fresh total, at most `reread_rounds`.
        """
        if read.window.span == 1:
            self._read_one_second(query, read, first)
            return
        self._read_by_date(query, read, first)
        for attempt in range(1, self.cfg.reread_rounds + 1):
            if not read.missing:
                return
            log.debug("%r %s: %d of %d ids; re-reading it (round %d)", query, read.window,
                      len(read.seen), read.expected, attempt)
            self._read_by_date(query, read)

    def _split(self, query: str, window: Window, total: int) -> list[Window]:
        """Record `window` as split (its probe is discarded) and return its children."""
        parts = parts_needed(total, self.cfg.cap, self.cfg.fill)
        with self._lock:
            self.catalog.set_window(query, self._filter, window.lo, window.hi, "split",
                                    total=total, children=parts, calls=1)
            self.stats.update(windows_split=1, ideal_calls=1)
        if self._bar is not None and self._bar.total is None and len(self._roots) == 1:
            self._bar.total = total
            self._bar.refresh()
        log.debug("%r %s: %d results > cap, split in %d", query, window, total, parts)
        return window.split(parts)

    def _finish(self, query: str, read: WindowRead, total: int) -> None:
        """Record a read window: done when exact, capped past the cap, else left unfinished.

        `total` is the first probe's: the ideal is what numbered pages of it would cost; every
        answered call beyond that is counted as a re-read (the price of exactness)."""
        cfg, window = self.cfg, read.window
        ideal = pages_needed(total, cfg.cap, cfg.per_page)
        if total > cfg.cap:
            status = "capped"  # known to be partial: whatever the reachable pages gave is kept
        elif read.missing:
            status = "incomplete"
        else:
            status = "done"
        with self._lock:
            self.stats.update(ideal_calls=ideal, reread_calls=max(0, read.calls - ideal))
            if status == "incomplete":
                why = (f"incomplete: {len(read.seen)} of {read.expected} ids after "
                       f"{cfg.reread_rounds} re-read round(s)")
                self.catalog.set_window(query, self._filter, window.lo, window.hi, "failed",
                                        total=read.total, photos=len(read.seen), calls=read.calls,
                                        error=why)
                self.stats.update(windows_incomplete=1)
                self.incomplete_windows.append((query, window, len(read.seen), read.expected))
            else:
                self.catalog.set_window(query, self._filter, window.lo, window.hi, status,
                                        total=read.total, photos=len(read.seen), calls=read.calls)
                self.stats.update({f"windows_{status}": 1})
        if status == "incomplete":
            log.warning("%r %s left unfinished: %d of %d ids came back after %d re-read "
                        "round(s); re-run to retry it", query, window, len(read.seen),
                        read.expected, cfg.reread_rounds)
        elif status == "capped":
            log.warning("%r %s: %d results within one second; only the first %d are reachable",
                        query, window, total, cfg.cap)

    def crawl_window(self, query: str, window: Window) -> list[Window]:
        """Crawl one window; returns the children to crawl if it had to be split."""
        cfg = self.cfg
        rec = self.catalog.get_window(query, self._filter, window.lo, window.hi)
        if rec and rec["status"] in ("done", "capped"):
            self._count(windows_skipped=1)
            return []
        if rec and rec["status"] == "split":
            return window.split(rec["children"])
        try:
            first = self.search(query, window, 1)
            total = int(first["photos"]["total"])
            if total > cfg.cap and window.lo < window.hi:
                return self._split(query, window, total)
            if self._bar is not None and self._bar.total is None and rec is None and self._roots == {window}:
                self._bar.total = total  # the first probe: the whole query's size
            read = WindowRead(window, total, cfg.cap)
            self._read_window(query, read, first)
            self._finish(query, read, total)
            return []
        except (_Stopped, LimitReached):
            return []
        except Exception as exc:  # noqa: BLE001 - sorted below
            if is_fatal(exc):
                self._stop.set()
                raise
            last = exc.last if isinstance(exc, RetriesExhausted) else exc
            why = scrub(describe(last))
            if isinstance(exc, RetriesExhausted):
                why = f"{why} (after {exc.attempts} attempts)"
            with self._lock:
                self.catalog.set_window(query, self._filter, window.lo, window.hi, "failed",
                                        error=why)
                self.stats.update(windows_failed=1)
                self.failed_windows.append((query, window, why))
            log.warning("%r %s left unfinished: %s; re-run to retry it", query, window, why)
            return []

    # -- a whole query -------------------------------------------------------------------------
    def roots(self, query: str, root: Window) -> list[Window]:
        """What to crawl of `root` for `query`: the whole range when it was crawled (or begun)
        with these very dates — its recorded tree then resumes exactly —, else only the parts
        no finished window of an earlier run covers (a later end date, an earlier start)."""
        if self.catalog.get_window(query, self._filter, root.lo, root.hi) is not None:
            return [root]
        finished = [Window(w["min_date"], w["max_date"]) for w in self.catalog.windows(query)
                    if w["filter"] == self._filter and w["status"] in ("done", "capped")]
        gaps = uncovered(root, finished)
        if finished:
            log.info("%r: earlier runs finished part of %s; crawling %d uncovered range(s): %s", query, root,
                     len(gaps), ", ".join(map(str, gaps[:3])) + (" ..." if len(gaps) > 3 else ""))
        return gaps

    def crawl_query(self, query: str, roots: list[Window]) -> None:
        self._bar = None
        self._roots = set(roots)  # a probe of the only root sizes the progress bar
        if self.progress:
            from facesift.common.progress import progress
            self._bar = progress(desc=f"crawl {query!r}", unit="photo", dynamic_ncols=True,
                             total=(self.cfg.limit - self._catalogued) if self.cfg.limit else None)
        try:
            with ThreadPoolExecutor(max_workers=max(1, self.cfg.threads),
                                    thread_name_prefix="crawl") as pool:
                running: dict[Future, Window] = {pool.submit(self.crawl_window, query, r): r for r in roots}
                try:
                    while running:
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                        for fut in done:
                            running.pop(fut)
                            for child in fut.result():
                                running[pool.submit(self.crawl_window, query, child)] = child
                        if self._bar is not None:
                            self._bar.set_postfix(calls=self.stats["api_calls"],
                                                  windows=len(running), refresh=False)
                except BaseException:
                    self._stop.set()
                    for fut in running:
                        fut.cancel()
                    raise
        finally:
            if self._bar is not None:
                self._bar.close()

    def run(self) -> collections.Counter:
        root = date_range(self.cfg)
        queries = list(dict.fromkeys(q.strip() for q in self.cfg.queries if q.strip()))
        if not queries:
            raise ValueError("no query given: pass --query KEYWORD (repeatable)")
        if self.cfg.limit:
            self._catalogued = self.catalog.count(queries)
        for query in queries:
            if self._stop.is_set():
                break
            log.info("crawling %r over %s", query, root)
            self.crawl_query(query, self.roots(query, root))
        self.stats["limit_reached"] = int(bool(self.cfg.limit) and self._catalogued >= self.cfg.limit)
        return self.stats


def crawl(cfg: CrawlConfig, progress: bool = True) -> collections.Counter:
    """Run a crawl as configured; raises CredentialsError when a person must fix the key."""
    from facesift.curate.flickr import credentials
    from facesift.common.config import env_or
    key, api_secret = credentials(cfg.api_key, cfg.api_secret)
    api_url = env_or(cfg.api_url, URL_ENV) or DEFAULT_API_URL
    with Catalog(cfg.catalog) as catalog:
        crawler = Crawler(cfg, catalog, key, api_secret, api_url, progress=progress)
        try:
            return crawler.run()
        except CredentialsError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                raise CredentialsError(f"the API refused the key: {describe(exc)} "
                                       f"(check FLICKR_API_KEY / api_key)") from exc
            raise


def summary_fields(stats: collections.Counter) -> dict:
    """The fields of the `crawl:` summary line, in order (the CLI adds `catalog`)."""
    return {"new": stats["photos_new"], "duplicates": stats["duplicates"],
            "rejected_license": stats["rejected_license"], "rejected_no_cv": stats["rejected_no_cv"],
            "no_url": stats["rejected_no_url"], "windows_done": stats["windows_done"],
            "windows_split": stats["windows_split"], "windows_skipped": stats["windows_skipped"],
            "windows_failed": stats["windows_failed"],
            "windows_incomplete": stats["windows_incomplete"], "api_calls": stats["api_calls"],
            "ideal_calls": stats["ideal_calls"], "reread_calls": stats["reread_calls"],
            "retries": stats["retries"]}
