"""Download and decode photos concurrently, turning every bad input into a reason, never a crash.

A thread pool fetches (HTTP with per-thread `requests.Session` connection reuse, or local
files) and decodes in parallel; results come back *in submission order* through a bounded
window, so the detector never waits on one slow host for long while memory stays bounded,
and which of two identical photos is kept does not depend on thread timing.

Guards, in the order they apply: per-host concurrency cap, timeouts, retries with jittered
exponential backoff (timeouts, connection errors, 429 and 5xx), a byte cap, sniffing (HTML and
unknown formats are rejected before decoding), the decompression-bomb pixel cap (read from the
header, before any pixel is decoded), truncated/corrupt bodies, EXIF orientation.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import io
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import requests
from PIL import Image, ImageOps

from curate.config import DownloadConfig
from curate.retry import RetriesExhausted, retry_call

RETRY_STATUS = {429, 500, 502, 503, 504}


class SkipPhoto(Exception):
    """A photo that cannot be used; the message is the reason stored in the catalog."""


@dataclass
class Fetched:
    """One photo after download + decode: `image` (H×W×3 uint8 RGB) or `error`."""
    row: dict
    image: np.ndarray | None = None
    sha256: str | None = None
    error: str | None = None
    nbytes: int = 0
    source_size: tuple[int, int] | None = None  # (w, h) before any reduced-scale JPEG decode


# ---- bytes -----------------------------------------------------------------------------------

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
    (b"P1", "pnm"), (b"P2", "pnm"), (b"P3", "pnm"), (b"P4", "pnm"), (b"P5", "pnm"), (b"P6", "pnm"),
)


def sniff(data: bytes) -> str:
    """The image format from the leading bytes; raises SkipPhoto for HTML/text and unknown bytes."""
    if not data:
        raise SkipPhoto("empty body")
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<")):
        raise SkipPhoto("not an image: HTML/XML body")
    raise SkipPhoto(f"not an image: unknown format (first bytes {data[:8].hex()})")


def decode_image(data: bytes, max_pixels: int, min_side: int = 1, draft: int = 0,
                 sizes: list | None = None) -> np.ndarray:
    """Bytes → upright RGB array. The pixel cap is checked on the header before decoding.

    `draft` > 0 lets JPEGs decode at a reduced DCT scale whose sides stay ≥ `draft` (much faster
    when only a small resized image is wanted); the original (w, h) is appended to `sizes`.
    """
    kind = sniff(data)
    try:
        # (no warnings.catch_warnings here: it is not thread-safe; our own cap is checked first)
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > max_pixels:
            raise SkipPhoto(f"too many pixels: {w}x{h} > {max_pixels} (decompression-bomb cap)")
        if min(w, h) < min_side:
            raise SkipPhoto(f"too small: {w}x{h}")
        if sizes is not None:
            sizes.append((w, h))
        if draft and kind == "jpeg":
            im.draft("RGB", (draft, draft))
        im.load()
        im = ImageOps.exif_transpose(im)
    except SkipPhoto:
        raise
    except Image.DecompressionBombError as exc:
        raise SkipPhoto(f"too many pixels (decompression-bomb cap): {exc}") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise SkipPhoto(f"cannot decode {kind}: {type(exc).__name__}: {exc}") from None
    if im.mode != "RGB":
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("RGB")
    return np.asarray(im)


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


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if "://" not in url:
        return Path(url)
    return None


class _Retryable(Exception):
    pass


def _get_once(session: requests.Session, url: str, cfg: DownloadConfig) -> bytes:
    try:
        with session.get(url, timeout=(cfg.timeout, cfg.timeout), stream=True) as resp:
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(f"HTTP {resp.status_code}")
            if resp.status_code != 200:
                raise SkipPhoto(f"HTTP {resp.status_code}")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
                raise SkipPhoto(f"too large: {declared} bytes > {cfg.max_bytes}")
            buf = bytearray()
            for chunk in resp.iter_content(chunk_size=1 << 16):
                buf += chunk
                if len(buf) > cfg.max_bytes:
                    raise SkipPhoto(f"too large: > {cfg.max_bytes} bytes")
            if declared and declared.isdigit() and len(buf) < int(declared):
                raise _Retryable(f"truncated body: {len(buf)} of {declared} bytes")
            return bytes(buf)
    except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        if isinstance(exc, requests.Timeout):
            name = "timeout"
        elif isinstance(exc, requests.exceptions.ChunkedEncodingError):
            name = "truncated body (connection closed early)"
        else:
            name = "connection error"
        raise _Retryable(f"{name}: {str(exc)[:200]}") from None


def fetch_bytes(url: str, session: requests.Session, cfg: DownloadConfig,
                limiter: HostLimiter | None = None, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """GET with the per-host cap, retries (jittered exponential backoff) and the byte cap."""
    local = _local_path(url)
    if local is not None:
        try:
            size = local.stat().st_size
        except OSError as exc:
            raise SkipPhoto(f"cannot read {local}: {exc.strerror}") from None
        if size > cfg.max_bytes:
            raise SkipPhoto(f"too large: {size} bytes > {cfg.max_bytes}")
        return local.read_bytes()
    if not url.startswith(("http://", "https://")):
        raise SkipPhoto(f"unsupported URL scheme: {url[:80]}")
    def once() -> bytes:
        sem = limiter(url) if limiter else None
        if sem:
            sem.acquire()
        try:
            return _get_once(session, url, cfg)
        finally:
            if sem:
                sem.release()

    try:
        return retry_call(once, lambda exc: isinstance(exc, _Retryable), attempts=cfg.retries + 1,
                          base_delay=cfg.backoff, max_delay=30.0, sleep=sleep, what=url)
    except RetriesExhausted as exc:
        raise SkipPhoto(f"{exc.last} (after {exc.attempts} attempts)") from None


class Fetcher:
    """Per-thread sessions (connection reuse without sharing a Session across threads)."""

    def __init__(self, cfg: DownloadConfig):
        self.cfg = cfg
        self.limiter = HostLimiter(cfg.per_host)
        self._local = threading.local()

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=max(4, self.cfg.per_host))
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers["User-Agent"] = self.cfg.user_agent
            self._local.session = s
        return s

    def __call__(self, row: dict) -> Fetched:
        """Never raises: any failure becomes `Fetched.error`."""
        url = row.get("url") or ""
        try:
            if not url:
                raise SkipPhoto("no URL")
            data = fetch_bytes(url, self.session(), self.cfg, self.limiter)
            sha = hashlib.sha256(data).hexdigest()
            sizes: list = []
            try:
                image = decode_image(data, self.cfg.max_pixels, self.cfg.min_side, self.cfg.draft, sizes)
            except SkipPhoto as exc:
                return Fetched(row, sha256=sha, error=str(exc), nbytes=len(data))
            w, h = sizes[0]
            size = (image.shape[1], image.shape[0]) if not self.cfg.draft else \
                ((w, h) if (image.shape[1] >= image.shape[0]) == (w >= h) else (h, w))
            return Fetched(row, image=image, sha256=sha, nbytes=len(data), source_size=size)
        except SkipPhoto as exc:
            return Fetched(row, error=str(exc))
        except Exception as exc:  # a bug or an unforeseen library error must not stop the run
            return Fetched(row, error=f"{type(exc).__name__}: {str(exc)[:200]}")


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


def download(rows: Iterable[dict], cfg: DownloadConfig) -> Iterator[Fetched]:
    """Fetched photos in the order of `rows`, downloaded and decoded by `cfg.workers` threads."""
    window = cfg.queue_size or 8 * max(1, cfg.workers)
    return ordered_map(Fetcher(cfg), rows, cfg.workers, max(window, cfg.workers))
