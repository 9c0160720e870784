"""The local Flickr-compatible server: the API as flickrapi sees it, images, bad routes, faults."""
from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import flickrapi
import pytest
import requests
from flickrapi.exceptions import FlickrError
from PIL import Image

from facesift.flickr_sandbox import FlickrSandbox, SandboxConfig, split_count

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sb(shared_data):
    cfg = SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 4600, "humans": 200},
                        unrelated=50, seed=1, slow_seconds=0.3, slow_api_seconds=0.5)
    with FlickrSandbox(cfg) as server:
        yield server


def _client(sb, key="any-key", timeout=10):
    client = flickrapi.FlickrAPI(key, "any-secret", format="parsed-json", store_token=False,
                                 timeout=timeout)
    client.REST_URL = sb.api_url
    return client


def _search(sb, **kw):
    params = {"text": "faces", "per_page": 500, "page": 1,
              "extras": "license,owner_name,date_upload,tags,o_dims,url_c,url_z"}
    params.update(kw)
    return _client(sb).photos.search(**params)


def test_envelope_types_and_paging(sb):
    ans = _search(sb)
    assert ans["stat"] == "ok"
    photos = ans["photos"]
    assert photos["total"] == "4600" and isinstance(photos["total"], str)  # Flickr sends a string
    assert (photos["page"], photos["pages"], photos["perpage"]) == (1, 10, 500)
    p = photos["photo"][0]
    assert isinstance(p["license"], str) and isinstance(p["dateupload"], str)
    assert {"id", "owner", "secret", "server", "title", "ownername", "tags", "url_z"} <= set(p)
    # Newest first; per_page is capped at 500.
    dates = [int(x["dateupload"]) for x in photos["photo"]]
    assert dates == sorted(dates, reverse=True)
    assert len(_search(sb, per_page=900)["photos"]["photo"]) == 500


def test_the_4000_cap_repeats_pages(sb):
    sb.config.stable_ties = True  # page contents comparable between requests
    try:
        first = [p["id"] for p in _search(sb, page=1)["photos"]["photo"]]
        eighth = _search(sb, page=8)["photos"]
        ninth = _search(sb, page=9)["photos"]
        assert len(eighth["photo"]) == 500 and eighth["photo"][0]["id"] not in first
        assert ninth["total"] == "4600"  # total stays full ...
        assert [p["id"] for p in ninth["photo"]] == first  # ... while results repeat page 1
        reachable = {p["id"] for page in range(1, 11)
                     for p in _search(sb, page=page)["photos"]["photo"]}
        assert len(reachable) == 4000
    finally:
        sb.config.stable_ties = False


def _ties(sb) -> dict[int, list[str]]:
    """Upload second -> ids of the 'faces' photos sharing it (ties only)."""
    by_date: dict[int, list[str]] = {}
    for p in sb.matching(text="faces"):
        by_date.setdefault(p.dateupload, []).append(p.id)
    return {d: ids for d, ids in by_date.items() if len(ids) > 1}


def test_same_second_bursts(sb, shared_data):
    ties = _ties(sb)
    sizes = sorted(len(ids) for ids in ties.values())
    in_ties = sum(sizes)
    assert len(ties) >= 50 and sizes[-1] >= 10  # runs of 5-20 uploads in one second
    assert 0.15 < in_ties / 4600 < 0.45  # about burst_share of the photos
    owners = {d: {sb.by_id[i].owner for i in ids} for d, ids in ties.items() if len(ids) >= 5}
    assert sum(len(o) == 1 for o in owners.values()) > 0.8 * len(owners)  # one owner's burst
    flat = SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 300}, seed=1,
                         tie_sizes=(1, 1))
    with FlickrSandbox(flat) as off:
        assert len(_ties(off)) < 5  # only chance coincidences
    with pytest.raises(ValueError, match="tie_sizes"):
        FlickrSandbox(SandboxConfig(photos=str(shared_data / "photos"), tie_sizes=(5, 2)))


def _tie_page(sb, d: int, per_page: int = 500) -> list[str]:
    return [p["id"] for p in _search(sb, min_upload_date=d, max_upload_date=d,
                                     per_page=per_page)["photos"]["photo"]]


def test_ties_come_back_in_an_order_that_changes_per_request(sb, shared_data):
    d, ids = max(_ties(sb).items(), key=lambda kv: len(kv[1]))
    orders = [_tie_page(sb, d) for _ in range(6)]
    assert all(sorted(o) == sorted(ids) for o in orders)  # a whole tie on one page: complete
    assert len({tuple(o) for o in orders}) > 1  # ... in an order that changes
    # Paged inside the tie, pages overlap and miss: the defect a crawler must repair.
    total = int(_search(sb, min_upload_date=d, max_upload_date=d)["photos"]["total"])
    assert total == len(ids)
    unions = [{i for page in (1, 2, 3, 4) for i in
               [p["id"] for p in _search(sb, min_upload_date=d, max_upload_date=d, per_page=3,
                                         page=page)["photos"]["photo"]]} for _ in range(6)]
    assert any(len(u) < min(len(ids), 12) for u in unions)
    # Reproducible: the order is a function of (seed, request number).
    cfg = SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 600}, seed=4)
    runs = []
    for _ in range(2):
        with FlickrSandbox(cfg) as twin:
            second = max(_ties(twin).items(), key=lambda kv: len(kv[1]))[0]
            runs.append([_tie_page(twin, second) for _ in range(3)])
    assert runs[0] == runs[1] and len(set(map(tuple, runs[0]))) > 1
    sb.config.stable_ties = True
    try:
        assert len({tuple(_tie_page(sb, d)) for _ in range(3)}) == 1
    finally:
        sb.config.stable_ties = False


def test_never_returned_ids_are_counted_but_not_served(sb):
    d, ids = next(iter(_ties(sb).items()))
    sb.config.never_returned = [ids[0]]
    try:
        ans = _search(sb, min_upload_date=d, max_upload_date=d)["photos"]
        assert int(ans["total"]) == len(ids)
        assert sorted(p["id"] for p in ans["photo"]) == sorted(ids[1:])
    finally:
        sb.config.never_returned = []
    assert sorted(_tie_page(sb, d)) == sorted(ids)


def test_filters_dates_licences_tags(sb):
    everything = sb.matching(text="faces", licenses=[4, 9])
    mid = sorted(p.dateupload for p in everything)[len(everything) // 2]
    ans = _search(sb, min_upload_date=mid, max_upload_date=mid + 86400 * 90, license="4,9")
    got = ans["photos"]["photo"]
    assert got and int(ans["photos"]["total"]) == len(got) < 500
    assert all(mid <= int(p["dateupload"]) <= mid + 86400 * 90 for p in got)  # bounds inclusive
    assert any(int(p["dateupload"]) == mid for p in got)
    assert {p["license"] for p in got} <= {"4", "9"}
    by_date = _search(sb, min_upload_date="2012-01-01", max_upload_date="2012-12-31 23:59:59")
    assert 0 < int(by_date["photos"]["total"]) < 4600
    tagged = _search(sb, text=None, tags="humans")["photos"]
    assert tagged["total"] == "200"
    assert any("no_cv" in p["tags"].split() for p in _search(sb, per_page=500)["photos"]["photo"])
    assert int(_search(sb, text="faces humans")["photos"]["total"]) == round(0.1 * 200)


def test_errors_and_bad_key(sb):
    with pytest.raises(FlickrError) as bad:
        _client(sb, key=sb.config.bad_key).photos.search(text="faces")
    assert bad.value.code == 100 and "Invalid API Key" in str(bad.value)
    with pytest.raises(FlickrError) as none:
        _client(sb).photos.search(per_page=5)
    assert none.value.code == 3
    with pytest.raises(FlickrError) as unknown:
        _client(sb).photos.getSizes(photo_id="1")
    assert unknown.value.code == 112
    assert "any-key" in sb.keys_seen  # read from flickrapi's OAuth header


def test_fault_injection(sb):
    client = _client(sb, timeout=0.25)
    sb.fail_next(["105", "201", "503", "500", "drop", "slow"])
    for code in (105, 201):
        with pytest.raises(FlickrError) as e:
            client.photos.search(text="faces")
        assert e.value.code == code
    for status in (503, 500):
        with pytest.raises(FlickrError, match=f"Status code {status}"):
            client.photos.search(text="faces")
    with pytest.raises(requests.ConnectionError):
        client.photos.search(text="faces")
    with pytest.raises(requests.Timeout):
        client.photos.search(text="faces")
    assert client.photos.search(text="faces")["stat"] == "ok"
    # A seeded rate: roughly that share of calls fail.
    sb.set_faults(0.5, ["105"])
    try:
        fails = 0
        for _ in range(40):
            try:
                client.photos.search(text="humans", per_page=1)
            except FlickrError:
                fails += 1
        assert 8 <= fails <= 32
    finally:
        sb.set_faults(0.0)


def test_api_calls_counted_across_threads(sb):
    sb.reset_counts()
    threads = [threading.Thread(target=lambda: _client(sb).photos.search(text="humans", per_page=1))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sb.api_calls == 16


def test_images_are_per_id_variants(sb, shared_data):
    photos = _search(sb, per_page=500)["photos"]["photo"]
    by_source: dict = {}
    for p in photos:
        by_source.setdefault(sb.by_id[p["id"]].source, []).append(p)
    source, same = max(by_source.items(), key=lambda kv: len(kv[1]))
    assert len(same) >= 2
    blobs = []
    for p in same[:3]:
        if "url_c" not in p:
            continue
        r = requests.get(p["url_c"], timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
        im = Image.open(io.BytesIO(r.content))
        assert im.size == (p["width_c"], p["height_c"])
        blobs.append(r.content)
        assert requests.get(p["url_c"], timeout=10).content == r.content  # deterministic
    assert len({hashlib.sha256(b).hexdigest() for b in blobs}) == len(blobs) >= 2
    bad_secret = same[0]["url_z"].replace(sb.by_id[same[0]["id"]].secret, "0" * 10)
    assert requests.get(bad_secret, timeout=10).status_code == 404


def test_exact_source_bytes_without_variants(shared_data):
    cfg = SandboxConfig(photos=str(shared_data / "photos"), queries={"faces": 30}, seed=2,
                        variants=False)
    with FlickrSandbox(cfg) as raw:
        p = raw.photos[0]
        data = requests.get(raw.photo_url(p, "z"), timeout=10).content
        assert data == p.source.read_bytes()


def test_bad_routes(sb):
    base = sb.base_url + "/bad/"
    corrupt = requests.get(base + "corrupt.jpg", timeout=10)
    assert corrupt.content[:3] == b"\xff\xd8\xff"
    with pytest.raises(OSError):
        Image.open(io.BytesIO(corrupt.content)).load()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(base + "truncated.jpg", timeout=10)
    html = requests.get(base + "html.jpg", timeout=10)
    assert html.headers["Content-Type"] == "image/jpeg" and html.content.startswith(b"<!DOCTYPE html")
    huge = requests.get(base + "huge.png", timeout=30)
    assert len(huge.content) < 2_000_000
    Image.MAX_IMAGE_PIXELS, old = None, Image.MAX_IMAGE_PIXELS
    try:
        assert Image.open(io.BytesIO(huge.content)).size == (20000, 20000)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert requests.get(base + "404", timeout=10).status_code == 404
    assert [requests.get(base + "500", timeout=10).status_code for _ in range(2)] == [500, 500]
    with pytest.raises(requests.Timeout):
        requests.get(base + "slow.jpg", timeout=0.1)
    slow = requests.get(base + "slow.jpg", timeout=10)
    Image.open(io.BytesIO(slow.content)).verify()
    # flaky: 503 or a dropped connection the first time each n is asked, then a valid JPEG.
    outcomes = []
    for n in ("1", "2"):
        try:
            outcomes.append(requests.get(base + f"flaky/{n}.jpg", timeout=10).status_code)
        except requests.ConnectionError:
            outcomes.append("dropped")
        again = requests.get(base + f"flaky/{n}.jpg", timeout=10)
        assert again.status_code == 200
        Image.open(io.BytesIO(again.content)).verify()
    assert sorted(map(str, outcomes)) == ["503", "dropped"]


def test_catalogue_counts_and_split():
    assert split_count(301, ["a", "b"]) == {"a": 151, "b": 150}


def test_sandbox_command_errors(sb, tmp_path, capsys):
    import logging

    from facesift.commands.sandbox import main
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["--photos", str(ROOT / "data" / "sample" / "photos"), "--count", "5",
                     "--port", str(sb.port)]) == 2  # port taken
        assert "cannot listen" in capsys.readouterr().err
        assert main(["--photos", str(tmp_path), "--count", "5"]) == 2  # no images
        assert "no images" in capsys.readouterr().err
    finally:  # main() set up logging for a process; give pytest its handlers back
        root.handlers[:] = handlers
        root.setLevel(level)


def test_sandbox_command_url_file(tmp_path):
    url_file = tmp_path / "sandbox.url"
    proc = subprocess.Popen([sys.executable, "-m", "facesift", "sandbox", "--photos",
                             str(ROOT / "data" / "sample" / "photos"), "--count", "50",
                             "--url-file", str(url_file)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not url_file.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        url = url_file.read_text().strip()
        ans = requests.post(url, data={"method": "flickr.photos.search", "text": "faces",
                                       "api_key": "k", "format": "json", "nojsoncallback": 1},
                            timeout=10).json()
        assert ans["photos"]["total"] == "50"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"export FACESIFT_FLICKR_API_URL={url}" in out
