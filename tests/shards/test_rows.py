"""`shards.rows`: counts per shard, rank slices and row ranges that line up with index order."""
from __future__ import annotations

import pytest

from facesift.shards.index import read_index, write_index
from facesift.shards.rows import StaleCountError, iter_rows, rank_slice, shard_counts
from tests.shards.fake_shards import keys_grid, make_set


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("rows") / "shards"
    layout = [keys_grid(1, 4, "a")[0], [], keys_grid(1, 3, "b")[0], keys_grid(1, 5, "c")[0]]
    make_set(d, layout)
    return d, [k for keys in layout for k in keys]


def test_rank_slices_cover_every_row_once():
    assert [rank_slice(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [rank_slice(2, r, 4) for r in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 2)]


def test_counts_from_the_index_and_from_the_tars(shard_set):
    d, keys = shard_set
    urls, counts = shard_counts(d)
    assert counts == [4, 0, 3, 5] and len(urls) == 4
    assert shard_counts(sorted(str(p) for p in d.glob("*.tar")))[1] == counts   # no index: counted


@pytest.mark.parametrize("start,stop", [(0, 12), (2, 9), (4, 7), (7, 12), (5, 6), (3, 3)])
def test_any_range_is_those_rows_in_index_order(shard_set, start, stop):
    d, keys = shard_set
    urls, counts = shard_counts(d)
    rows = list(iter_rows(urls, counts, start, stop, extensions={"json"}))
    assert [r["__key__"] for r in rows] == keys[start:stop]
    assert all("json" in r and "jpg" not in r for r in rows)        # only the members asked for


def test_a_stale_count_is_an_error_not_shifted_rows(shard_set, tmp_path):
    d, _ = shard_set
    index = read_index(d / "index.json")
    for delta, match in ((1, "expected 5 samples, found 4"), (-1, "expected 3 samples, found 4")):
        entries = [dict(e) for e in index["shardlist"]]
        entries[0]["nsamples"] += delta                              # 4 samples, index says 5 / 3
        write_index(tmp_path, [{**e, "url": str(d / e["url"])} for e in entries])
        urls, counts = shard_counts(tmp_path / "index.json")
        with pytest.raises(StaleCountError, match=match):
            list(iter_rows(urls, counts, 0, sum(counts)))
    assert [r["__key__"] for r in iter_rows(urls, counts, 0, 2)] == ["a0x0_0", "a0x1_0"]  # inside: fine
