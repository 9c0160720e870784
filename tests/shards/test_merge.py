"""`shards merge-index`: per-part indexes of `curate --part K/N` become one index.json."""
from __future__ import annotations

import json

import pytest

from facesift.shards.index import shard_urls, write_index
from facesift.shards.merge import merge_indexes, missing_parts
from facesift.shards.verify import verify
from tests.shards.fake_shards import sample, sha256, shards_cli, write_shard


def _part(directory, k, n, keys):
    """What curate --part K/N leaves: faces-pKofN-%06d.tar and index-pKofN.json."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, chunk in enumerate(keys):
        name = f"faces-p{k}of{n}-{i:06d}.tar"
        write_shard(directory / name, [sample(key) for key in chunk])
        entries.append({"url": name, "nsamples": len(chunk), "sha256": sha256(directory / name)})
    return write_index(directory, entries, filename=f"index-p{k}of{n}.json", part=f"{k}/{n}")


def _three_parts(d):
    for k in (2, 0, 1):                                              # written in any order
        _part(d, k, 3, [[f"k{k}s{s}i{i}_0" for i in range(3)] for s in range(k + 1)])


@pytest.mark.filterwarnings("ignore:String specifications")
def test_merge_directory_in_part_order(tmp_path):
    d = tmp_path / "shards"
    _three_parts(d)
    assert verify(d, progress=False).ok                              # parts verify before merging
    assert shards_cli(["shards", "merge-index", str(d)]) == 0
    merged = json.loads((d / "index.json").read_text())
    assert [e["url"] for e in merged["shardlist"]] == (
        ["faces-p0of3-000000.tar"] + [f"faces-p1of3-{i:06d}.tar" for i in range(2)]
        + [f"faces-p2of3-{i:06d}.tar" for i in range(3)])
    assert [p["part"] for p in merged["parts"]] == ["0/3", "1/3", "2/3"]
    assert sum(e["nsamples"] for e in merged["shardlist"]) == 18
    assert shard_urls(d) == [str(d / e["url"]) for e in merged["shardlist"]]
    report = verify(d, progress=False)
    assert report.ok and report.nsamples == 18
    import wids                                                      # consumers read it as is
    dataset = wids.ShardListDataset(str(d / "index.json"), cache_dir=str(tmp_path / "wids"))
    assert len(dataset) == 18 and dataset[17]["__key__"] == "k2s2i2_0"


def test_parts_in_other_directories_are_rebased(tmp_path):
    a = _part(tmp_path / "node0", 0, 2, [["a_0", "b_0"]])
    b = _part(tmp_path / "node1", 1, 2, [["c_0"]])
    out = tmp_path / "all" / "index.json"
    out.parent.mkdir()
    merge_indexes([a, b], out)
    assert shard_urls(out) == [str(tmp_path / "all" / "../node0/faces-p0of2-000000.tar"),
                               str(tmp_path / "all" / "../node1/faces-p1of2-000000.tar")]
    assert verify(out, progress=False).ok


def test_conflicts_are_refused_and_nothing_is_written(tmp_path):
    d = tmp_path / "dup"
    first = _part(d, 0, 2, [["a_0"]])
    second = d / "index-p1of2.json"
    second.write_text(first.read_text())                             # lists the same shard again
    with pytest.raises(ValueError, match="listed by both"):
        merge_indexes([first, second], d / "index.json")
    assert not (d / "index.json").exists()
    assert shards_cli(["shards", "merge-index", str(d)]) == 1

    gap = tmp_path / "gap"
    _part(gap, 0, 3, [["a_0"]])
    _part(gap, 2, 3, [["c_0"]])
    with pytest.raises(ValueError, match="p1of3"):
        merge_indexes(sorted(gap.glob("index-*.json")), gap / "index.json")
    assert shards_cli(["shards", "merge-index", str(gap), "--allow-partial"]) == 0
    assert len(json.loads((gap / "index.json").read_text())["shardlist"]) == 2

    lost = tmp_path / "lost"
    idx = _part(lost, 0, 1, [["a_0"], ["b_0"]])
    (lost / "faces-p0of1-000001.tar").unlink()
    with pytest.raises(ValueError, match="does not exist"):
        merge_indexes([idx], lost / "index.json")


def test_missing_parts_detection():
    assert missing_parts(["index-p0of2.json", "index-p1of2.json"]) == []
    assert missing_parts(["x/index-p1of4.json", "x/index-p3of4.json"]) == ["p0of4", "p2of4"]
    assert missing_parts(["index-a.json"]) == []


def test_parts_written_by_the_curate_shard_writer(tmp_path):
    """The naming contract with shards/writer.py: its part files merge and verify as they are."""
    writer_mod = pytest.importorskip("facesift.shards.writer")
    d = tmp_path / "shards"
    for k in (0, 1):
        part = (k, 2)
        writer = writer_mod.ShardWriter(d, prefix=writer_mod.part_prefix(part),
                                        index_name=f"index{writer_mod.part_suffix(part)}.json",
                                        stats_name=f"stats{writer_mod.part_suffix(part)}.json",
                                        maxcount=2, index_extra={"part": f"{k}/2"})
        for i in range(3):
            s = sample(f"w{k}x{i}_0")
            writer.write_group([s], meta=s["__key__"])
        writer.close()
    assert verify(d, progress=False).ok
    assert shards_cli(["shards", "merge-index", str(d)]) == 0
    report = verify(d, progress=False)
    assert report.ok and report.nsamples == 6 and len(report.shards) == 4
    assert [p["part"] for p in json.loads((d / "index.json").read_text())["parts"]] == ["0/2", "1/2"]
