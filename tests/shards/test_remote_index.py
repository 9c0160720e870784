"""An index.json kept where the shards live (http, a `pipe:` command) works like a local one."""
from __future__ import annotations

import tarfile

import pytest

from facesift.shards.index import index_location, read_index, resolve_url, shard_urls
from facesift.shards.info import collect_info
from facesift.shards.reader import iter_keys
from facesift.shards.verify import verify
from tests.http_files import serve_directory
from tests.shards.fake_shards import keys_grid, make_set

LAYOUT = keys_grid(3, 6)


@pytest.fixture
def shard_dir(tmp_path):
    d = tmp_path / "shards"
    make_set(d, LAYOUT)
    return d


def test_relative_names_resolve_against_the_index():
    assert resolve_url("pipe:aws s3 cp s3://b/faces/index.json -", "faces-000001.tar") == \
        "pipe:aws s3 cp s3://b/faces/faces-000001.tar -"
    assert resolve_url("https://h/a/faces/index.json", "faces-000001.tar") == "https://h/a/faces/faces-000001.tar"
    assert resolve_url("gs://b/faces/index.json", "faces-000001.tar") == "gs://b/faces/faces-000001.tar"
    assert resolve_url("/data/faces/index.json", "file:faces-000001.tar") == "/data/faces/faces-000001.tar"
    assert resolve_url("https://h/faces/index.json", "/abs/x.tar") == "/abs/x.tar"
    assert resolve_url("https://h/faces/index.json", "pipe:cat x.tar") == "pipe:cat x.tar"
    assert index_location("https://h/faces/faces-000000.tar") is None
    assert index_location("pipe:aws s3 cp s3://b/faces/index.json -") == "pipe:aws s3 cp s3://b/faces/index.json -"


def test_http_index_streams_every_shard(shard_dir):
    with serve_directory(shard_dir) as base:
        urls = shard_urls(f"{base}/index.json")
        assert urls == [f"{base}/faces-{i:06d}.tar" for i in range(3)]
        assert [list(iter_keys(u)) for u in urls] == LAYOUT
        assert collect_info(f"{base}/index.json", progress=False)["samples"] == 18


def test_pipe_index_swaps_the_file_name(shard_dir):
    urls = shard_urls(f"pipe:cat {shard_dir}/index.json")
    assert urls == [f"pipe:cat {shard_dir}/faces-{i:06d}.tar" for i in range(3)]
    assert [list(iter_keys(u)) for u in urls] == LAYOUT


def test_verify_checks_a_remote_index_and_catches_a_changed_shard(shard_dir):
    with serve_directory(shard_dir) as base:
        report = verify(f"{base}/index.json", progress=False)
        assert report.ok, report.problems
        assert report.nsamples == 18 and not report.warnings  # sha256 and counts were checked
        victim = shard_dir / "faces-000001.tar"
        with tarfile.open(victim) as tar:
            offset = tar.getmember(f"{LAYOUT[1][2]}.jpg").offset_data
        data = bytearray(victim.read_bytes())
        data[offset + 200] ^= 0xFF
        victim.write_bytes(bytes(data))
        report = verify(f"{base}/index.json", progress=False)
    assert any(p.shard.endswith("faces-000001.tar") and "sha256" in p.what and "index.json" in p.what
               for p in report.problems), report.problems


def test_missing_remote_index_is_a_clear_error(shard_dir):
    with serve_directory(shard_dir) as base:
        with pytest.raises(ValueError, match="could not read the shard index"):
            read_index(f"{base}/nope/index.json")
