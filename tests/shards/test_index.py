"""Shard specs resolve to the same ordered URL list however the user names them."""
from __future__ import annotations

import pytest

from facesift.shards.format import make_key, sanitize_key
from facesift.shards.index import index_urls, shard_urls, write_index
from facesift.shards.split import in_fraction, key_score


def _touch_shards(d, n):
    paths = []
    for i in range(n):
        p = d / f"faces-{i:06d}.tar"
        p.write_bytes(b"")
        paths.append(p)
    return paths


def test_dir_without_index_lists_tars_sorted(tmp_path):
    paths = _touch_shards(tmp_path, 3)
    assert shard_urls(tmp_path) == [str(p) for p in paths]


def test_index_relative_urls_resolve_against_index_dir(tmp_path):
    paths = _touch_shards(tmp_path, 2)
    write_index(tmp_path, [{"url": p.name, "nsamples": 1, "sha256": "x"} for p in reversed(paths)])
    expected = [str(p) for p in reversed(paths)]        # index order, not name order
    assert shard_urls(tmp_path) == expected
    assert shard_urls(tmp_path / "index.json") == expected
    assert index_urls(tmp_path / "index.json") == expected


def test_brace_file_pipe_and_lists(tmp_path):
    paths = _touch_shards(tmp_path, 3)
    pattern = str(tmp_path / "faces-{000000..000002}.tar")
    assert shard_urls(pattern) == [str(p) for p in paths]
    assert shard_urls("file:" + str(paths[0])) == [str(paths[0])]
    assert shard_urls("pipe:cat /x/a-{0..1}.tar") == ["pipe:cat /x/a-0.tar", "pipe:cat /x/a-1.tar"]
    assert shard_urls(f"{paths[0]},{paths[2]}") == [str(paths[0]), str(paths[2])]
    with pytest.raises(FileNotFoundError):
        shard_urls(tmp_path / "nope-{0..1}.tar")


def test_keys_have_no_dots_or_separators():
    assert make_key("subject01.happy", 0) == "subject01-happy_0"
    assert "/" not in sanitize_key("a/b/../c.gif") and "." not in sanitize_key("a/b/../c.gif")


def test_fractions_nested_and_order_free():
    keys = [f"k{i}" for i in range(5000)]
    f10 = {k for k in keys if in_fraction(k, 0.1, seed=3)}
    f2 = {k for k in keys if in_fraction(k, 0.02, seed=3)}
    assert f2 <= f10
    assert 400 < len(f10) < 600 and 60 < len(f2) < 140
    assert {k for k in reversed(keys) if in_fraction(k, 0.1, seed=3)} == f10
    assert key_score("k1", 0) != key_score("k1", 1)
