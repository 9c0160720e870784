"""The shard writer: groups never split, atomic + byte-identical shards, index/stats, recovery."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from facesift.shards.index import read_index
from facesift.shards.reader import iter_keys
from facesift.shards.writer import ShardWriter, part_prefix


def _jpg(seed: int) -> bytes:
    import io
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _groups(n_photos: int = 7) -> list[list[dict]]:
    """Photo i has (i % 3) + 1 faces."""
    return [[{"__key__": f"p{i}_{j}", "jpg": _jpg(10 * i + j), "json": {"photo_id": f"p{i}", "face_index": j}}
             for j in range(i % 3 + 1)] for i in range(n_photos)]


def _write(directory: Path, groups, **kw) -> list[list]:
    committed: list[list] = []
    with ShardWriter(directory, on_commit=committed.append, **kw) as w:
        for i, g in enumerate(groups):
            w.write_group(g, meta=f"p{i}")
    return committed


def test_groups_never_split_and_index_matches_files(tmp_path):
    groups = _groups()
    committed = _write(tmp_path, groups, maxcount=4)
    index = read_index(tmp_path / "index.json")
    assert index["wids_version"] == 1
    shard_of: dict[str, set] = {}
    total = 0
    for entry in index["shardlist"]:
        path = tmp_path / entry["url"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        keys = list(iter_keys(str(path)))
        assert entry["nsamples"] == len(keys) <= 4
        total += len(keys)
        for k in keys:
            shard_of.setdefault(k.split("_")[0], set()).add(entry["url"])
    assert total == sum(len(g) for g in groups)
    assert all(len(s) == 1 for s in shard_of.values()), "a photo's faces were split across shards"
    # every group was committed exactly once, in order, and only after its shard existed
    assert [m for c in committed for m in c] == [f"p{i}" for i in range(len(groups))]
    assert [p.name for p in sorted(tmp_path.glob("faces-*.tar"))] == [e["url"] for e in index["shardlist"]]
    assert not list(tmp_path.glob(".*.tmp"))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["samples"] == total and stats["shards"] == len(index["shardlist"])


def test_commit_happens_after_rename(tmp_path):
    seen = []

    def on_commit(groups):
        seen.append((sorted(p.name for p in tmp_path.glob("faces-*.tar")), list(tmp_path.glob(".*.tar.tmp"))))

    with ShardWriter(tmp_path, on_commit=on_commit, maxcount=2) as w:
        for i, g in enumerate(_groups(4)):
            w.write_group(g, meta=i)
    for n, (names, temps) in enumerate(seen):
        assert names[-1] == f"faces-{n:06d}.tar" and not temps


def test_same_input_gives_byte_identical_shards(tmp_path):
    _write(tmp_path / "a", _groups(), maxcount=5)
    _write(tmp_path / "b", _groups(), maxcount=5)
    a, b = sorted((tmp_path / "a").glob("*.tar")), sorted((tmp_path / "b").glob("*.tar"))
    assert [p.name for p in a] == [p.name for p in b] and len(a) > 1
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_maxsize_rolls_between_groups(tmp_path):
    _write(tmp_path, _groups(6), maxsize=6000)
    counts = [e["nsamples"] for e in read_index(tmp_path / "index.json")["shardlist"]]
    assert len(counts) > 2 and sum(counts) == sum(i % 3 + 1 for i in range(6))


def test_reads_back_with_webdataset_and_wids(tmp_path):
    import wids
    groups = _groups()
    _write(tmp_path, groups, maxcount=4)
    urls = [str(tmp_path / e["url"]) for e in read_index(tmp_path / "index.json")["shardlist"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [s["__key__"] for g in groups for s in g]
    assert samples[0]["jpg"].size == (16, 16) and samples[0]["json"]["photo_id"] == "p0"
    ds = wids.ShardListDataset(str(tmp_path / "index.json"))
    assert len(ds) == len(samples)
    assert ds[len(ds) - 1]["__key__"] == samples[-1]["__key__"]


def test_recovery_indexes_orphan_shard_and_drops_temp(tmp_path):
    committed = _write(tmp_path, _groups(4), maxcount=3)
    index = read_index(tmp_path / "index.json")
    n = len(index["shardlist"])
    # simulate a kill between rename and index rewrite: the last shard is on disk, not indexed
    last = index["shardlist"].pop()
    (tmp_path / "index.json").write_text(json.dumps(index))
    (tmp_path / ".faces-000099.tar.tmp").write_bytes(b"partial")
    (tmp_path / ".index.json.k2j4h5g6.tmp").write_text("{")
    (tmp_path / ".faces-p0of2-000000.tar.tmp").write_bytes(b"another part's work in progress")
    w = ShardWriter(tmp_path, maxcount=3)
    assert [p.name for p in w.recover()][-1] == last["url"]
    assert not (tmp_path / ".faces-000099.tar.tmp").exists()
    assert not (tmp_path / ".index.json.k2j4h5g6.tmp").exists()
    assert (tmp_path / ".faces-p0of2-000000.tar.tmp").exists(), "must not touch other parts' temps"
    entries = read_index(tmp_path / "index.json")["shardlist"]
    assert len(entries) == n and entries[-1] == last
    w.write_group(_groups(1)[0], meta="new")
    w.close()
    assert read_index(tmp_path / "index.json")["shardlist"][-1]["url"] == f"faces-{n:06d}.tar"
    assert committed


def test_abort_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path) as w:
            w.write_group(_groups(1)[0], meta=0)
            raise RuntimeError("boom")
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".*.tmp"))


def test_part_names_do_not_clash(tmp_path):
    for k in range(2):
        sfx = f"-p{k}of2"
        with ShardWriter(tmp_path, prefix=part_prefix((k, 2)), index_name=f"index{sfx}.json",
                         stats_name=f"stats{sfx}.json") as w:
            w.write_group(_groups(1)[0], meta=k)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["faces-p0of2-000000.tar", "faces-p1of2-000000.tar"]
    assert (tmp_path / "index-p0of2.json").exists() and (tmp_path / "index-p1of2.json").exists()


def test_rejects_keys_with_dots(tmp_path):
    with ShardWriter(tmp_path) as w, pytest.raises(ValueError, match="contains"):
        w.write_group([{"__key__": "subject01.glasses_0", "jpg": b"x"}])
