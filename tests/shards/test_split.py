"""`shards split`: nested, deterministic key lists whose membership ignores file order."""
from __future__ import annotations

import json
import random

import pytest

from facesift.shards.split import check_nested, parse_fractions, read_key_list, split_filename
from tests.shards.fake_shards import make_set
from tests.shards.fake_shards import shards_cli as main

FRACTIONS = "1.0,0.1,0.02"


def _keys(n):
    return [f"photo{i:05d}_{i % 3}" for i in range(n)]


def _split(spec, out, *extra):
    assert main(["shards", "split", str(spec), "--fractions", FRACTIONS, "--out", str(out), *extra]) == 0
    return {f: read_key_list(out / split_filename(f)) for f in (1.0, 0.1, 0.02)}


@pytest.fixture(scope="module")
def keys():
    return _keys(2000)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("split") / "shards"
    make_set(d, [keys[i:i + 500] for i in range(0, 2000, 500)], size=8)
    return d


def test_nested_counts_and_index_order(shard_dir, keys, tmp_path):
    splits = _split(shard_dir, tmp_path / "out", "--seed", "7")
    assert splits[1.0] == keys                                     # everything, in index order
    assert set(splits[0.02]) <= set(splits[0.1]) <= set(splits[1.0])
    assert 150 < len(splits[0.1]) < 250 and 20 < len(splits[0.02]) < 65
    for f in (0.1, 0.02):                                           # each list keeps index order
        assert splits[f] == [k for k in keys if k in set(splits[f])]
    summary = json.loads((tmp_path / "out" / "split.json").read_text())
    assert {v["file"]: v["count"] for v in summary["fractions"].values()} == {
        "split-1.0.txt": 2000, "split-0.1.txt": len(splits[0.1]), "split-0.02.txt": len(splits[0.02])}
    assert summary["config"]["seed"] == 7 and summary["total"] == 2000


def test_deterministic_and_seed_dependent(shard_dir, tmp_path):
    a = _split(shard_dir, tmp_path / "a", "--seed", "7")
    b = _split(shard_dir, tmp_path / "b", "--seed", "7")
    c = _split(shard_dir, tmp_path / "c", "--seed", "8")
    assert (tmp_path / "a" / "split-0.1.txt").read_bytes() == (tmp_path / "b" / "split-0.1.txt").read_bytes()
    assert a == b
    assert set(c[0.1]) != set(a[0.1])


def test_membership_ignores_file_order_and_layout(shard_dir, keys, tmp_path):
    shuffled = list(keys)
    random.Random(1).shuffle(shuffled)
    other = tmp_path / "other"                                       # 7 shards, different order
    make_set(other, [shuffled[i:i + 300] for i in range(0, 2000, 300)], size=8)
    a = _split(shard_dir, tmp_path / "a", "--seed", "3")
    b = _split(other, tmp_path / "b", "--seed", "3")
    for f in (1.0, 0.1, 0.02):
        assert set(a[f]) == set(b[f])
    assert b[0.1] == [k for k in shuffled if k in set(b[0.1])]     # but listed in *its* index order


def test_exclude_drops_keys_before_splitting(shard_dir, keys, tmp_path):
    drop = keys[::10]
    exclude = tmp_path / "dups.txt"
    exclude.write_text("# near-duplicates\n" + "\n".join(drop) + "\nnot-a-key_0\n")
    full = _split(shard_dir, tmp_path / "full", "--seed", "5")
    cut = _split(shard_dir, tmp_path / "cut", "--seed", "5", "--exclude", str(exclude))
    for f in (1.0, 0.1, 0.02):
        assert not set(cut[f]) & set(drop)
        assert cut[f] == [k for k in full[f] if k not in set(drop)]  # the rest is unaffected
    assert json.loads((tmp_path / "cut" / "split.json").read_text())["excluded"] == 200


def test_fraction_parsing_and_nesting_check():
    assert parse_fractions("0.02,1,0.1") == [1.0, 0.1, 0.02]
    assert split_filename(0.02) == "split-0.02.txt" and split_filename(1) == "split-1.0.txt"
    for bad in ("0", "1.5", "0.1,0.1", ""):
        with pytest.raises(ValueError):
            parse_fractions(bad)
    with pytest.raises(ValueError, match="not inside"):
        check_nested({1.0: ["a", "b"], 0.5: ["c"]})
