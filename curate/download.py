"""Download and decode photos concurrently, turning every bad input into a reason, never a crash.

A thread pool fetches (HTTP through one shared urllib3 pool manager with keep-alive, or local
files) and decodes in parallel; results come back *in submission order* through a bounded
window, so the detector never waits on one slow host for long while memory stays bounded,
and which of two identical photos is kept does not depend on thread timing.

Guards, in the order they apply: per-host concurrency cap, timeouts, retries with jittered
exponential backoff (timeouts, connection errors, 429 and 5xx), a byte cap, sniffing (HTML and
unknown formats are rejected before decoding), the decompression-bomb pixel cap (read from the
header, before any pixel is decoded), truncated/corrupt bodies, EXIF orientation, every image
mode to 8-bit RGB with its tones (common/imagemodes.py: 16-bit greyscale is not white).

Every failure names its category when it is raised (`SkipPhoto(message, reason)`, the
vocabulary in reasons.py), so counts by reason never depend on parsing messages.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import io
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import urllib3
import urllib3.exceptions as u3exc
from PIL import Image, ImageOps

from facesift.curate import reasons as R
from facesift.curate.config import DownloadConfig
from facesift.common.imagemodes import to_rgb
from facesift.curate.retry import RetriesExhausted, retry_call

RETRY_STATUS = {429, 500, 502, 503, 504}
_ADDRESS = re.compile(r" <[\w.]+ object at 0x[0-9a-f]+>")


class SkipPhoto(Exception):
    """A photo that cannot be used: the message is stored in the catalog's `error`, `reason`
    (one of reasons.REASONS) in its `reason`; without one it is classified from the message."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = R.checked(reason, message)


@dataclass
class Fetched:
    """One photo after download + decode: `image` (H×W×3 uint8 RGB) or `error`."""
    row: dict
    image: np.ndarray | None = None
    sha256: str | None = None
    error: str | None = None
    reason: str | None = None  # the category of `error` (reasons.py)
    nbytes: int = 0
    source_size: tuple[int, int] | None = None  # (w, h) before any reduced-scale JPEG decode
    processed: Any = None  # what `download(post=...)` returned (or raised) for it, on the fetch thread


# ---- bytes -----------------------------------------------------------------------------------

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"P1", "pnm"), (b"P2", "pnm"), (b"P3", "pnm"), (b"P4", "pnm"), (b"P5", "pnm"), (b"P6", "pnm"),
)


def sniff(data: bytes) -> str:
    """The image format from the leading bytes; raises SkipPhoto for HTML/text and unknown bytes."""
    if not data:
        raise SkipPhoto("empty body", R.EMPTY)
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<")):
        raise SkipPhoto("not an image: HTML/XML body", R.NOT_AN_IMAGE)
    raise SkipPhoto(f"not an image: unknown format (first bytes {data[:8].hex()})", R.NOT_AN_IMAGE)


def decode_image(data: bytes, max_pixels: int, min_side: int = 1, draft: int = 0,
                 sizes: list | None = None) -> np.ndarray:
    """Bytes → upright RGB array (see `decode_pil`)."""
    return np.asarray(decode_pil(data, max_pixels, min_side, draft, sizes))


def decode_pil(data: bytes, max_pixels: int, min_side: int = 1, draft: int = 0,
               sizes: list | None = None) -> Image.Image:
    """Bytes → upright 8-bit RGB PIL image, whatever the file's mode (16-bit, float, CMYK,
    palette, alpha: see common/imagemodes.py). The pixel cap is checked on the header before decoding.

    `draft` > 0 lets JPEGs decode at a reduced DCT scale whose sides stay ≥ `draft` (much faster
    when only a small resized image is wanted); the original (w, h) is appended to `sizes`.
    """
    kind = sniff(data)
    stage = "header"
    try:
        # (no warnings.catch_warnings here: it is not thread-safe; our own cap is checked first)
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > max_pixels:
            raise SkipPhoto(f"too many pixels: {w}x{h} > {max_pixels} (decompression-bomb cap)",
                            R.TOO_MANY_PIXELS)
        if min(w, h) < min_side:
            raise SkipPhoto(f"too small: {w}x{h}", R.TOO_SMALL)
        if sizes is not None:
            sizes.append((w, h))
        if draft and kind == "jpeg":
            im.draft("RGB", (draft, draft))
        stage = "pixels"
        im.load()
        ImageOps.exif_transpose(im, in_place=True)  # in place: without a tag the default copies the pixels
        return to_rgb(im)
    except SkipPhoto:
        raise
    except Image.DecompressionBombError as exc:
        raise SkipPhoto(f"too many pixels (decompression-bomb cap): {exc}", R.TOO_MANY_PIXELS) from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        # pixels that end early: Pillow says "image file is truncated" / "Truncated File Read",
        # or "broken data stream" for a cut PNG. A header it cannot parse is corrupt, whatever
        # it says (SOI + junk reads as "Truncated File Read" while looking for markers).
        text = str(exc).lower()
        cut = stage == "pixels" and ("truncated" in text or "broken data stream" in text)
        reason = R.TRUNCATED if cut else R.CANNOT_DECODE
        said = _ADDRESS.sub("", str(exc))  # PIL names the buffer by its address: noise in a catalog
        raise SkipPhoto(f"cannot decode {kind}: {type(exc).__name__}: {said}", reason) from None


# ---- fetching --------------------------------------------------------------------------------

class HostLimiter:
    """At most `per_host` concurrent requests to any one host (politeness, and fairness when one
    host is slow)."""

    def __init__(self, per_host: int):
        self.per_host = max(1, per_host)
        self._lock = threading.Lock()
        self._sems: dict[str, threading.BoundedSemaphore] = {}

    def __call__(self, url: str) -> threading.BoundedSemaphore:
        host = urllib.parse.urlsplit(url).netloc
        with self._lock:
            if host not in self._sems:
                self._sems[host] = threading.BoundedSemaphore(self.per_host)
            return self._sems[host]


def local_path(url: str) -> Path | None:
    """The file a `file://` URI or a bare path names; None for a network URL."""
    if url.startswith("file://"):  # bytes, then the file system's decoding: non-UTF-8 names survive
        return Path(os.fsdecode(urllib.parse.unquote_to_bytes(urllib.parse.urlsplit(url).path)))
    if "://" not in url:
        return Path(url)
    return None


class _Retryable(Exception):
    """A failure worth another attempt; `reason` is its category if the attempts run out."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


MAX_REDIRECTS = 10


def _get_once(http: urllib3.PoolManager, url: str, cfg: DownloadConfig) -> bytes:
    """One GET: the status, the declared and actual size against the cap, truncation.

    urllib3 directly (no `requests` layer): per small image, requests' request preparation,
    environment merging and chunk generator cost more CPU than the transfer itself.
    """
    timeout = urllib3.Timeout(connect=cfg.timeout, read=cfg.timeout)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            resp = http.request("GET", url, preload_content=False, retries=False, redirect=False,
                                timeout=timeout)
            location = resp.headers.get("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                resp.drain_conn()
                resp.release_conn()
                url = urllib.parse.urljoin(url, location)
                continue
            break
        else:
            raise SkipPhoto(f"more than {MAX_REDIRECTS} redirects", R.HTTP_ERROR)
        complete = False
        try:
            if resp.status in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status}", R.SERVER_ERROR)
            if resp.status != 200:
                raise SkipPhoto(f"HTTP {resp.status}", R.HTTP_ERROR)
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
                raise SkipPhoto(f"too large: {declared} bytes > {cfg.max_bytes}", R.TOO_LARGE)
            data = resp.read(cfg.max_bytes + 1, decode_content=True)  # blocks until that much or EOF
            if len(data) > cfg.max_bytes:
                raise SkipPhoto(f"too large: > {cfg.max_bytes} bytes", R.TOO_LARGE)
            if declared and declared.isdigit() and len(data) < int(declared):
                raise _Retryable(f"truncated body: {len(data)} of {declared} bytes", R.TRUNCATED)
            complete = resp.read(1) == b""
            return data
        finally:
            if not complete:
                resp.close()  # an unread or oversized body: drop the connection, never drain it
            resp.release_conn()
    except (u3exc.TimeoutError, u3exc.ProtocolError, u3exc.SSLError, u3exc.ProxyError) as exc:
        if isinstance(exc, u3exc.NewConnectionError):
            name, reason = "connection error", R.CONNECTION
        elif isinstance(exc, u3exc.TimeoutError):
            name, reason = "timeout", R.TIMEOUT
        elif isinstance(exc, u3exc.ProtocolError) and "IncompleteRead" in str(exc):
            name, reason = "truncated body (connection closed early)", R.TRUNCATED
        else:
            name, reason = "connection error", R.CONNECTION
        raise _Retryable(f"{name}: {str(exc)[:200]}", reason) from None
    except u3exc.DecodeError as exc:
        raise SkipPhoto(f"cannot decode the response's content-encoding: {str(exc)[:200]}",
                        R.CANNOT_DECODE) from None
    except (u3exc.LocationValueError, u3exc.URLSchemeUnknown) as exc:
        raise SkipPhoto(f"bad URL: {str(exc)[:200]}", R.BAD_URL) from None


def fetch_bytes(url: str, http: urllib3.PoolManager, cfg: DownloadConfig,
                limiter: HostLimiter | None = None, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """GET with the per-host cap, retries (jittered exponential backoff) and the byte cap."""
    local = local_path(url)
    if local is not None:
        try:
            size = local.stat().st_size
        except OSError as exc:
            raise SkipPhoto(f"cannot read {local}: {exc.strerror}", R.UNREADABLE) from None
        if size > cfg.max_bytes:
            raise SkipPhoto(f"too large: {size} bytes > {cfg.max_bytes}", R.TOO_LARGE)
        try:
            return local.read_bytes()
        except OSError as exc:  # a directory named like a photo, permissions, removed meanwhile
            raise SkipPhoto(f"cannot read {local}: {exc.strerror}", R.UNREADABLE) from None
    if not url.startswith(("http://", "https://")):
        raise SkipPhoto(f"unsupported URL scheme: {url[:80]}", R.BAD_URL)
    def once() -> bytes:
        sem = limiter(url) if limiter else None
        if sem:
            sem.acquire()
        try:
            return _get_once(http, url, cfg)
        finally:
            if sem:
                sem.release()

    try:
        return retry_call(once, lambda exc: isinstance(exc, _Retryable), attempts=cfg.retries + 1,
                          base_delay=cfg.backoff, max_delay=30.0, sleep=sleep, what=url)
    except RetriesExhausted as exc:
        raise SkipPhoto(f"{exc.last} (after {exc.attempts} attempts)",
                        getattr(exc.last, "reason", None)) from None


class Fetcher:
    """One thread-safe urllib3 pool manager (keep-alive connections, `per_host` per host) for all
    download threads; HTTP(S)_PROXY / NO_PROXY from the environment are honoured as `requests` did."""

    def __init__(self, cfg: DownloadConfig, post: Callable[[Fetched, Image.Image], Any] | None = None):
        self.cfg, self.post = cfg, post
        self.limiter = HostLimiter(cfg.per_host)
        self._headers = urllib3.util.make_headers(keep_alive=True, accept_encoding=True,
                                                  user_agent=cfg.user_agent)
        self._headers["Accept"] = "*/*"
        pool = {"num_pools": 64, "maxsize": max(4, cfg.per_host), "headers": self._headers}
        self._direct = urllib3.PoolManager(**pool)
        self._proxies = {k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
        self._proxied: dict[str, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._pool = pool
        # many threads wait on the network, but only as many as there are cores decode and
        # process at a time: beyond that they fight over the GIL for nothing (measured: the
        # default `--detector none` run 13 % faster on 2 cores with 16 download threads)
        self._cpu = threading.BoundedSemaphore(cfg.cpu_slots or os.cpu_count() or 1)

    def manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for `url`: direct, or through the environment's proxy for its scheme."""
        if not self._proxies:
            return self._direct
        parts = urllib.parse.urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return self._direct
        with self._lock:
            if proxy not in self._proxied:
                self._proxied[proxy] = urllib3.ProxyManager(proxy, **self._pool)
            return self._proxied[proxy]

    def __call__(self, row: dict) -> Fetched:
        """Never raises: any failure becomes `Fetched.error`."""
        url = row.get("url") or ""
        try:
            if not url:
                raise SkipPhoto("no URL", R.BAD_URL)
            data = fetch_bytes(url, self.manager(url), self.cfg, self.limiter)
            with self._cpu:
                return self._decode(row, data)
        except SkipPhoto as exc:
            return Fetched(row, error=str(exc), reason=exc.reason)
        except Exception as exc:  # a bug or an unforeseen library error must not stop the run
            return Fetched(row, error=f"{type(exc).__name__}: {str(exc)[:200]}", reason=R.OTHER)

    def _decode(self, row: dict, data: bytes) -> Fetched:
        sha = hashlib.sha256(data).hexdigest()
        sizes: list = []
        try:
            image = decode_pil(data, self.cfg.max_pixels, self.cfg.min_side, self.cfg.draft, sizes)
        except SkipPhoto as exc:
            return Fetched(row, sha256=sha, error=str(exc), reason=exc.reason, nbytes=len(data))
        w, h = sizes[0]
        size = image.size if not self.cfg.draft else \
            ((w, h) if (image.width >= image.height) == (w >= h) else (h, w))
        if self.post is None:
            return Fetched(row, image=np.asarray(image), sha256=sha, nbytes=len(data), source_size=size)
        fetched = Fetched(row, sha256=sha, nbytes=len(data), source_size=size)
        try:  # a processing error belongs to the caller (it is not a download failure)
            fetched.processed = self.post(fetched, image)
        except Exception as exc:
            fetched.processed = exc
        return fetched


def ordered_map(fn: Callable, items: Iterable, workers: int, window: int) -> Iterator:
    """`map(fn, items)` on a thread pool, results in input order, at most `window` in flight."""
    ex = cf.ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch")
    pending: collections.deque = collections.deque()
    try:
        for item in items:
            pending.append(ex.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def download(rows: Iterable[dict], cfg: DownloadConfig,
             post: Callable[[Fetched, Image.Image], Any] | None = None) -> Iterator[Fetched]:
    """Fetched photos in the order of `rows`, downloaded and decoded by `cfg.workers` threads.

    With `post`, each decoded photo is handed to `post(fetched, pil_image)` on the same thread
    and `fetched.processed` holds its result (or the exception it raised) instead of `image`:
    per-photo work that needs no batch (the `--detector none` crop, hashes, JPEG encode) runs
    where the photo already is, without an array copy or a second thread hop.

    `download_processes.download_in_processes` is the same over several processes.
    """
    window = cfg.queue_size or 8 * max(1, cfg.workers)
    return ordered_map(Fetcher(cfg, post), rows, cfg.workers, max(window, cfg.workers))
