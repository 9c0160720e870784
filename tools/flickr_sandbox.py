"""A local, Flickr-compatible HTTP server for tests and the demo (no network needed).

It speaks the slice of the Flickr REST API the crawler uses (`flickr.photos.search` with
text/tags, license, upload-date bounds, paging, extras; Flickr's JSON envelope and error codes;
the real 4,000-result cap, past which pages repeat while `total` stays full; same-second ties
in an order that changes per request) and serves the images at the URLs it hands out. Its
catalogue is generated, seeded, from a folder of real photos reused under many ids: owners
(some with bursts of uploads, 5-20 in the same second), licences 0-10, dates over a range,
titles and tags with the configured keywords and some `no_cv` opt-outs. By default each id
gets a deterministic variant of its source image (crop, scale, brightness, JPEG quality) so
ids sharing a file are near-duplicates, not byte-identical copies.

The catalogue itself lives in tools/sandbox_photos.py. Faults are injected by option (codes 105/201, HTTP 500/503, slow responses, dropped
connections), and fixed `/bad/...` routes give downloaders broken inputs to survive.

    with FlickrSandbox(SandboxConfig(photos="data/sample/photos", queries={"faces": 300})) as sb:
        os.environ["FACESIFT_FLICKR_API_URL"] = sb.api_url

Run it by hand with `facesift sandbox --photos DIR --count N` (or `python -m facesift sandbox ...`).
"""
from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import json
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageEnhance

from facesift.curate.crawl_windows import parse_date
from facesift.sandbox_config import FAULT_KINDS, SandboxConfig
from facesift.sandbox_photos import SandboxPhoto, Variant, build_catalogue, huge_png, tokens

log = logging.getLogger(__name__)

_ERRORS = {
    "100k": (100, "Invalid API Key (Key has invalid format)"),
    "100n": (100, "Invalid API Key (Key not found)"),
    "105": (105, "Service currently unavailable"),
    "201": (201, "Sorry, the Flickr API service is not currently available."),
    "3": (3, "Parameterless searches have been disabled. Please use flickr.photos.getRecent instead."),
    "112": (112, "Method not found"),
}


class FlickrSandbox:
    """The server, running in a background thread from construction until `stop()`."""

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        self.config = dataclasses.replace(config or SandboxConfig(), **overrides)
        unknown = set(self.config.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; choose from {FAULT_KINDS}")
        self.photos = build_catalogue(self.config)
        self.by_id = {p.id: p for p in self.photos}
        self._index: dict[str, list[SandboxPhoto]] = collections.defaultdict(list)
        for p in self.photos:  # already newest first
            for t in p.tokens:
                self._index[t].append(p)
        self._lock = threading.Lock()
        self._fault_rng = random.Random(self.config.seed + 1)
        self._api_calls = 0
        self._searches = 0  # seeds the per-request order of same-second ties
        self.faults_injected: collections.Counter = collections.Counter()
        self.image_requests = 0
        self.keys_seen: set[str] = set()
        self._forced: collections.deque = collections.deque()
        self._flaky_seen: set[str] = set()
        self._sources: dict[Path, Image.Image] = {}
        self._source_bytes: dict[Path, bytes] = {}
        self._image_cache: collections.OrderedDict = collections.OrderedDict()
        self._stopping = threading.Event()
        self._server = _Server((self.config.host, self.config.port), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.sandbox = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.config.host}:{self.port}"
        self.api_url = f"{self.base_url}/services/rest/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="flickr-sandbox",
                                        daemon=True)
        self._thread.start()
        log.info("Flickr sandbox on %s: %d photos", self.api_url, len(self.photos))

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FlickrSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters ---------------------------------------------------------------------------
    @property
    def api_calls(self) -> int:
        with self._lock:
            return self._api_calls

    def reset_counts(self) -> None:
        with self._lock:
            self._api_calls = 0
            self._searches = 0
            self.faults_injected.clear()
            self.image_requests = 0

    def set_faults(self, rate: float, kinds: list[str] | None = None) -> None:
        with self._lock:
            self.config.fault_rate = rate
            if kinds is not None:
                self.config.fault_kinds = list(kinds)

    # -- the catalogue ----------------------------------------------------------------------
    def matching(self, text: str | None = None, tags: str | None = None,
                 licenses: list[int] | None = None, min_date: int | None = None,
                 max_date: int | None = None, honour_license: bool = True) -> list[SandboxPhoto]:
        """Photos a search returns, in result order (newest first), before the 4,000 cap."""
        if text:
            toks = tokens(text)
            lists = [self._index.get(t, []) for t in toks]
            if not lists:
                return []
            ids = set.intersection(*(set(p.id for p in lst) for lst in lists))
            base = [p for p in min(lists, key=len) if p.id in ids]
        elif tags:
            wanted = [t.strip().lower() for t in tags.split(",") if t.strip()]
            base = [p for p in self.photos if any(t in p.tags for t in wanted)]
        else:
            base = list(self.photos)
        out = []
        lic = set(licenses) if licenses is not None and honour_license else None
        for p in base:
            if min_date is not None and p.dateupload < min_date:
                continue
            if max_date is not None and p.dateupload > max_date:
                continue
            if lic is not None and p.license not in lic:
                continue
            out.append(p)
        return out

    def expected_ids(self, text: str, licenses: list[int]) -> set[str]:
        """The ground truth of a crawl: the ids a correct crawler catalogues for `text` and
        `licenses` (every match, `no_cv` opt-outs left out), whatever the pages did."""
        return {p.id for p in self.matching(text=text, licenses=licenses) if "no_cv" not in p.tags}

    def photo_url(self, p: SandboxPhoto, suffix: str) -> str:
        return f"{self.base_url}/photos/{p.server}/{p.id}_{p.secret}_{suffix}.jpg"

    def photo_json(self, p: SandboxPhoto, extras: set[str]) -> dict:
        d: dict = {"id": p.id, "owner": p.owner, "secret": p.secret, "server": p.server, "farm": 66,
                   "title": p.title, "ispublic": 1, "isfriend": 0, "isfamily": 0}
        if "license" in extras:
            d["license"] = str(p.license)
        if "date_upload" in extras:
            d["dateupload"] = str(p.dateupload)
        if "owner_name" in extras:
            d["ownername"] = p.ownername
        if "tags" in extras:
            d["tags"] = " ".join(p.tags)
        if "o_dims" in extras:
            d["o_width"], d["o_height"] = str(p.size[0]), str(p.size[1])
        for suffix, (w, h) in p.sizes.items():
            if f"url_{suffix}" in extras:
                d[f"url_{suffix}"] = self.photo_url(p, suffix)
                d[f"height_{suffix}"], d[f"width_{suffix}"] = h, w
        return d

    # -- the API ----------------------------------------------------------------------------
    def fail_next(self, kinds: list[str]) -> None:
        """The next API calls fail in exactly these ways, in order (deterministic tests)."""
        with self._lock:
            self._forced.extend(kinds)

    def draw_fault(self) -> str | None:
        with self._lock:
            self._api_calls += 1
            if self._forced:
                kind = self._forced.popleft()
                self.faults_injected[kind] += 1
                return kind
            cfg = self.config
            if cfg.fault_rate > 0 and cfg.fault_kinds and self._fault_rng.random() < cfg.fault_rate:
                kind = self._fault_rng.choice(cfg.fault_kinds)
                self.faults_injected[kind] += 1
                return kind
        return None

    def api(self, params: dict[str, str], api_key: str | None) -> dict:
        """One REST call's JSON answer (after fault injection, which the handler does)."""
        if not api_key:
            return _fail("100n")
        with self._lock:
            self.keys_seen.add(api_key)
        if api_key == self.config.bad_key:
            return _fail("100k")
        method = params.get("method", "")
        if method == "flickr.test.echo":
            return {**params, "stat": "ok"}
        if method != "flickr.photos.search":
            return _fail("112")
        text, tags = params.get("text"), params.get("tags")
        if not text and not tags:
            return _fail("3")
        licenses = None
        if params.get("license"):
            licenses = [int(x) for x in params["license"].split(",") if x.strip()]
        min_date = parse_date(params["min_upload_date"]) if params.get("min_upload_date") else None
        max_date = parse_date(params["max_upload_date"]) if params.get("max_upload_date") else None
        found = self.matching(text, tags, licenses, min_date, max_date,
                              honour_license=not self.config.ignore_license)
        per_page = max(1, min(self.config.max_per_page, int(params.get("per_page") or 100)))
        page = max(1, int(params.get("page") or 1))
        total = len(found)  # ids in never_returned are counted here but never served
        pages = max(1, math.ceil(total / per_page)) if total else 0
        reachable = max(1, math.ceil(min(total, self.config.cap) / per_page))
        if total > self.config.cap and page > reachable:
            page_served = (page - 1) % reachable + 1   # the cap: later pages repeat earlier ones
        else:
            page_served = page
        with self._lock:
            self._searches += 1
            request = self._searches
        hidden = set(self.config.never_returned)
        served = [p for p in found if p.id not in hidden] if hidden else found
        start = (page_served - 1) * per_page
        chunk = self.page(served, start, min(start + per_page, self.config.cap), request)
        extras = {e.strip() for e in params.get("extras", "").split(",") if e.strip()}
        return {"photos": {"page": page, "pages": pages, "perpage": per_page, "total": str(total),
                           "photo": [self.photo_json(p, extras) for p in chunk]},
                "stat": "ok"}

    def page(self, found: list[SandboxPhoto], start: int, stop: int,
             request: int) -> list[SandboxPhoto]:
        """found[start:stop] as one request sees it.

        Flickr sorts by upload date, but photos uploaded in the same second come back in an
        order that changes from one request to the next, so a page boundary inside such a tie
        can repeat one photo and skip another. Each tie that the page touches is shuffled with
        an rng seeded by (seed, request number): reproducible, yet different per request.
        `stable_ties` keeps the catalogue's fixed order instead.
        """
        if start >= stop or start >= len(found):
            return []
        stop = min(stop, len(found))
        if self.config.stable_ties:
            return found[start:stop]
        lo, hi = start, stop  # widen to whole ties at both ends
        while lo > 0 and found[lo - 1].dateupload == found[start].dateupload:
            lo -= 1
        while hi < len(found) and found[hi].dateupload == found[stop - 1].dateupload:
            hi += 1
        rng = random.Random(f"{self.config.seed}:ties:{request}")
        ordered: list[SandboxPhoto] = []
        for _, tie in itertools.groupby(found[lo:hi], key=lambda p: p.dateupload):
            tie = list(tie)
            rng.shuffle(tie)
            ordered.extend(tie)
        return ordered[start - lo: stop - lo]

    # -- images -----------------------------------------------------------------------------
    def _source_image(self, path: Path) -> Image.Image:
        with self._lock:
            im = self._sources.get(path)
        if im is None:
            with Image.open(path) as raw:
                im = raw.convert("RGB")
            with self._lock:
                self._sources[path] = im
        return im

    def source_bytes(self, path: Path) -> bytes:
        with self._lock:
            data = self._source_bytes.get(path)
        if data is None:
            data = path.read_bytes()
            with self._lock:
                self._source_bytes[path] = data
        return data

    def image_bytes(self, p: SandboxPhoto, suffix: str) -> bytes:
        """The bytes served for one photo at one size (a cached, deterministic variant)."""
        if not self.config.variants:
            return self.source_bytes(p.source)
        key = (p.id, suffix)
        with self._lock:
            if key in self._image_cache:
                self._image_cache.move_to_end(key)
                return self._image_cache[key]
        v = Variant.for_photo(self.config.seed, p.id)
        src = self._source_image(p.source)
        im = src.crop(v.box(*src.size)).resize(p.size, Image.BILINEAR)
        im = ImageEnhance.Brightness(im).enhance(v.brightness)
        if p.sizes[suffix] != im.size:
            im = im.resize(p.sizes[suffix], Image.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=v.quality)
        data = buf.getvalue()
        with self._lock:
            self._image_cache[key] = data
            while len(self._image_cache) > 256:
                self._image_cache.popitem(last=False)
        return data

    def valid_jpeg(self) -> bytes:
        """A small valid JPEG for the /bad routes that eventually succeed."""
        im = self._source_image(self.photos[0].source).copy()
        im.thumbnail((320, 320))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        return buf.getvalue()

    def flaky_first(self, n: str) -> bool:
        with self._lock:
            if n in self._flaky_seen:
                return False
            self._flaky_seen.add(n)
            return True


class _Server(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a killed crawler, a timeout) is normal traffic for a
    server: one debug line, not socketserver's traceback on stderr."""

    def handle_error(self, request, client_address) -> None:
        import sys
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s hung up: %s", client_address, exc)
            return
        super().handle_error(request, client_address)


def _fail(key: str) -> dict:
    code, message = _ERRORS[key]
    return {"stat": "fail", "code": code, "message": message}


_PHOTO_PATH = re.compile(r"^/photos/(\d+)/(\d+)_([0-9a-f]+)_([a-z])\.jpg$")
_OAUTH_KEY = re.compile(r'oauth_consumer_key="([^"]*)"')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server_version = "FlickrSandbox/1.0"

    @property
    def sandbox(self) -> FlickrSandbox:
        return self.server.sandbox  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args) -> None:  # quiet: route to logging at DEBUG
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, body: bytes, ctype: str, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        """Close the connection without an answer (the client sees a connection error)."""
        self.close_connection = True

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            if url.path == "/services/rest/" or url.path == "/services/rest":
                self._api(url, body)
            elif url.path.startswith("/photos/"):
                self._photo(url.path)
            elif url.path.startswith("/bad/"):
                self._bad(url.path)
            else:
                self._send(404, b"not found\n", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        params = dict(urllib.parse.parse_qsl(url.query))
        ctype = self.headers.get("Content-Type", "")
        if body and "multipart" not in ctype:
            params.update(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        m = _OAUTH_KEY.search(self.headers.get("Authorization", ""))
        api_key = urllib.parse.unquote(m.group(1)) if m else params.get("api_key")
        sb = self.sandbox
        fault = sb.draw_fault()
        if fault == "drop":
            return self._drop()
        if fault in ("500", "503"):
            return self._send(int(fault), b"<html><body>Service Unavailable</body></html>",
                              "text/html")
        if fault == "slow":
            sb._stopping.wait(sb.config.slow_api_seconds)
        if fault in ("105", "201"):
            answer = _fail(fault)
        else:
            try:
                answer = sb.api(params, api_key)
            except ValueError as exc:
                answer = {"stat": "fail", "code": 4, "message": f"Invalid parameter: {exc}"}
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _photo(self, path: str) -> None:
        sb = self.sandbox
        m = _PHOTO_PATH.match(path)
        p = sb.by_id.get(m.group(2)) if m else None
        if p is None or m.group(3) != p.secret or m.group(4) not in p.sizes:
            return self._send(404, b"not found\n", "text/plain")
        with sb._lock:
            sb.image_requests += 1
        data = sb.image_bytes(p, m.group(4))
        ctype = "image/jpeg" if sb.config.variants or data[:3] == b"\xff\xd8\xff" else \
            Image.MIME.get(Image.open(io.BytesIO(data)).format or "", "application/octet-stream")
        self._send(200, data, ctype)

    def _bad(self, path: str) -> None:
        sb = self.sandbox
        name = path[len("/bad/"):]
        if name == "corrupt.jpg":
            junk = random.Random(7).randbytes(4096)
            return self._send(200, b"\xff\xd8\xff\xe0" + junk, "image/jpeg")
        if name == "truncated.jpg":
            data = sb.valid_jpeg()
            self.close_connection = True
            return self._send(200, data[: len(data) // 2], "image/jpeg", length=len(data))
        if name == "html.jpg":
            return self._send(200, b"<!DOCTYPE html><html><head><title>Photo not found</title>"
                                   b"</head><body><h1>This photo is no longer available</h1>"
                                   b"</body></html>\n", "image/jpeg")
        if name == "huge.png":
            return self._send(200, huge_png(), "image/png")
        if name == "404":
            return self._send(404, b"not found\n", "text/plain")
        if name == "500":
            return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        if name == "slow.jpg":
            sb._stopping.wait(sb.config.slow_seconds)
            return self._send(200, sb.valid_jpeg(), "image/jpeg")
        m = re.fullmatch(r"flaky/(\w+)\.jpg", name)
        if m:
            if sb.flaky_first(m.group(1)):
                if sum(map(ord, m.group(1))) % 2:
                    return self._drop()
                return self._send(503, b"<html><body>Service Unavailable</body></html>", "text/html")
            return self._send(200, sb.valid_jpeg(), "image/jpeg")
        self._send(404, b"not found\n", "text/plain")


def split_count(count: int, queries: list[str]) -> dict[str, int]:
    """`count` matching photos spread evenly over keywords (the first takes the remainder)."""
    queries = queries or ["faces"]
    each, rest = divmod(count, len(queries))
    return {q: each + (rest if i == 0 else 0) for i, q in enumerate(queries)}


def serve_forever(config: SandboxConfig, url_file: str | Path | None = None) -> None:
    """Run in the foreground until interrupted (SIGINT/SIGTERM); used by `facesift sandbox`."""
    import signal

    def _term(*_):
        raise KeyboardInterrupt

    sb = FlickrSandbox(config)
    signal.signal(signal.SIGTERM, _term)
    try:
        print(f"Flickr sandbox: {len(sb.photos)} photos from {config.photos}", flush=True)
        print(f"API URL: {sb.api_url}", flush=True)
        print(f"export FACESIFT_FLICKR_API_URL={sb.api_url}", flush=True)
        print(f"(any FLICKR_API_KEY / FLICKR_API_SECRET works except the key {config.bad_key!r})",
              flush=True)
        if url_file:
            from facesift.common.atomic import atomic_write_text
            atomic_write_text(url_file, sb.api_url + "\n")
        while True:
            time.sleep(3600)
    finally:
        sb.stop()

