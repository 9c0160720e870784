"""The crawler's small parts: windows, rows and filters, retry/backoff, token bucket, errors."""
from __future__ import annotations

import json
import random
import threading

import pytest
import requests
from flickrapi.exceptions import FlickrError

from facesift.curate.crawl_rows import choose_url, opted_out, photo_row
from facesift.curate.crawl import CrawlConfig, date_range
from facesift.curate.crawl_windows import (Window, WindowRead, page_items, pages_needed, parse_date,
                                           parts_needed, reread_per_page, uncovered)
from facesift.curate.flickr import CredentialsError, credentials, describe, is_fatal, is_retryable
from facesift.curate.ratelimit import TokenBucket
from facesift.curate.retry import RetriesExhausted, backoff_delays, retry_call


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 16])
def test_window_split_covers_exactly(parts):
    w = Window(1_000, 1_000 + 86_400 * 5 - 1)
    kids = w.split(parts)
    assert len(kids) == parts and kids[0].lo == w.lo and kids[-1].hi == w.hi
    assert all(a.hi + 1 == b.lo for a, b in zip(kids, kids[1:]))  # no gap, no overlap
    assert sum(k.span for k in kids) == w.span
    assert Window(5, 6).split(10) == [Window(5, 5), Window(6, 6)]


def test_uncovered_is_the_exact_complement():
    root = Window(0, 99)
    rng = random.Random(7)
    for _ in range(200):
        covered = [Window(lo, lo + rng.randint(0, 30)) for lo in (rng.randint(-20, 110) for _ in range(rng.randint(0, 6)))]
        gaps = uncovered(root, covered)
        seconds = {t for g in gaps for t in range(g.lo, g.hi + 1)}
        expect = {t for t in range(100) if not any(w.lo <= t <= w.hi for w in covered)}
        assert seconds == expect
        assert all(a.hi + 1 < b.lo for a, b in zip(gaps, gaps[1:]))  # sorted, maximal, disjoint
    assert uncovered(root, []) == [root] and uncovered(root, [Window(-5, 200)]) == []


def test_parts_and_pages():
    assert parts_needed(4_001, 4_000) == 2
    assert parts_needed(12_000, 4_000, 0.75) == 4
    assert pages_needed(0, 4_000, 500) == 1 and pages_needed(3_000, 4_000, 500) == 6
    assert pages_needed(9_999, 4_000, 500) == 8  # only the first 4,000 are reachable
    assert parse_date("2010-01-01") == 1262304000 == parse_date("1262304000")
    with pytest.raises(ValueError):
        parse_date("yesterday")


def test_page_items():
    answer = {"photos": {"photo": [{"id": 12, "dateupload": "99"}, {"id": "13"}]}}
    assert page_items(answer) == [("12", 99), ("13", None)]
    assert page_items({"photos": {}}) == []


def test_reread_page_sizes_and_what_is_missing():
    assert reread_per_page(500, 0) == 500
    sizes = [reread_per_page(500, k) for k in range(1, 8)]
    assert sizes == [450, 400, 350, 300, 250, 250, 250]  # other boundaries, never below half
    assert reread_per_page(1, 3) == 1 and reread_per_page(3, 5) == 1
    read = WindowRead(Window(0, 9), total=5, cap=4, seen={"a", "b"})
    assert (read.expected, read.missing) == (4, 2)  # past the cap only the cap is reachable
    read.seen |= {"c", "d", "e"}
    assert read.missing == 0


def test_date_range_bounds():
    assert date_range(CrawlConfig(min_date="2020-01-01", max_date="2020-01-01")) == \
        Window(1577836800, 1577836800 + 86399)  # a bare date is the whole day
    # a unix timestamp (10 digits like a date) is one second, not a day
    assert date_range(CrawlConfig(min_date="1577836800", max_date="1577836800")) == \
        Window(1577836800, 1577836800)
    with pytest.raises(ValueError, match="before"):
        date_range(CrawlConfig(min_date="2020-01-02", max_date="2020-01-01"))


def _photo(**kw) -> dict:
    p = {"id": "51", "owner": "1@N01", "ownername": "ann", "license": "4", "title": "a face",
         "tags": "faces portrait", "dateupload": "1300000000",
         "url_c": "http://h/c.jpg", "width_c": 800, "height_c": 600,
         "url_z": "http://h/z.jpg", "width_z": "640", "height_z": "480",
         "url_o": "http://h/o.jpg", "width_o": "4000", "height_o": "3000"}
    p.update(kw)
    return p


def test_photo_row_filters_and_types():
    row, why = photo_row(_photo(), "faces", [4, 5])
    assert why is None and row["license"] == 4 and row["dateupload"] == 1300000000
    assert (row["url"], row["width"], row["height"]) == ("http://h/c.jpg", 800, 600)
    assert photo_row(_photo(license="0"), "faces", [4, 5]) == (None, "license")
    assert photo_row(_photo(license="6"), "faces", [4, 5]) == (None, "license")
    assert photo_row(_photo(tags="faces no_cv"), "faces", [4]) == (None, "no_cv")
    assert opted_out("NOCV x") and not opted_out("no_cvx")
    # No url_c: the largest size under the pixel cap (z, not the 12 MP original).
    p = _photo()
    del p["url_c"]
    assert choose_url(p, "c", 1600 * 1600) == ("http://h/z.jpg", 640, 480)
    assert choose_url(p, "c", 20_000_000)[0] == "http://h/o.jpg"
    assert photo_row({"id": "1", "license": "4", "tags": ""}, "q", [4]) == (None, "no_url")


def test_retry_call_backoff_and_outcomes():
    sleeps = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise TimeoutError("slow")
        return "ok"

    assert retry_call(flaky, lambda e: isinstance(e, TimeoutError), attempts=5, base_delay=1,
                      max_delay=10, rng=random.Random(0), sleep=sleeps.append) == "ok"
    assert calls["n"] == 3 and len(sleeps) == 2
    assert 0.5 <= sleeps[0] < 1 and 1 <= sleeps[1] < 2  # exponential, jittered

    def fatal():
        raise KeyError("no")
    with pytest.raises(KeyError):
        retry_call(fatal, lambda e: False, sleep=sleeps.append)

    def always():
        raise TimeoutError("down")
    with pytest.raises(RetriesExhausted) as info:
        retry_call(always, lambda e: True, attempts=4, base_delay=0.01, sleep=lambda s: None)
    assert info.value.attempts == 4 and isinstance(info.value.last, TimeoutError)
    delays = list(backoff_delays(8, 1.0, 5.0, random.Random(1)))
    assert len(delays) == 7 and max(delays) < 5.0 and len(set(delays)) == 7


def test_token_bucket_limits_rate_across_threads():
    now = [0.0]
    lock = threading.Lock()

    def clock():
        with lock:
            return now[0]

    def sleep(s):
        with lock:
            now[0] += s

    bucket = TokenBucket(3600, burst=1, clock=clock, sleep=sleep)  # 1 call per second
    threads = [threading.Thread(target=lambda: [bucket.acquire() for _ in range(5)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 20 calls at 1/s with one saved token: at least 19 simulated seconds passed.
    assert now[0] >= 19 - 1e-6
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_error_classification():
    assert is_retryable(FlickrError("Error: 105: Service currently unavailable", code=105))
    assert is_retryable(FlickrError("Error: 201: not available", code=201))
    assert not is_retryable(FlickrError("Error: 100: Invalid API Key", code=100))
    assert is_fatal(FlickrError("Error: 100: Invalid API Key", code=100))
    assert not is_retryable(FlickrError("Error: 3: parameterless", code=3))
    assert is_retryable(FlickrError("do_request: Status code 503 received"))
    assert is_retryable(FlickrError("do_request: Status code 500 received"))
    assert not is_retryable(FlickrError("do_request: Status code 404 received"))
    assert describe(FlickrError("do_request: Status code 503 received")) == "HTTP 503"
    assert is_retryable(requests.ConnectionError("reset"))
    assert is_retryable(requests.ReadTimeout("slow"))
    assert is_retryable(json.JSONDecodeError("x", "<html>", 0))
    assert not is_retryable(ValueError("bad"))


def test_credentials(monkeypatch):
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    monkeypatch.delenv("FLICKR_API_SECRET", raising=False)
    with pytest.raises(CredentialsError, match="FLICKR_API_KEY and FLICKR_API_SECRET"):
        credentials(None, None)
    monkeypatch.setenv("FLICKR_API_KEY", "envkey123")
    with pytest.raises(CredentialsError, match="FLICKR_API_SECRET"):
        credentials(None, None)
    assert credentials(None, "cfgsecret") == ("envkey123", "cfgsecret")
    assert credentials("cfgkey", "cfgsecret") == ("cfgkey", "cfgsecret")
