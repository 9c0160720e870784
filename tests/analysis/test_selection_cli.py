"""`facesift shards split --exclude duplicates.txt` and `--method cluster-balanced` on real outputs."""
from __future__ import annotations

import argparse
import json

from tests.analysis.test_redundancy import _burst_shards
from tests.analysis.test_embed import _cli


def _split(*args: str) -> int:
    from facesift.commands import shards
    parser = argparse.ArgumentParser()
    shards.register(parser.add_subparsers())
    ns = parser.parse_args(["shards", "split", *args])
    return ns.func(ns)


def test_split_with_redundancy_outputs(tmp_path, caplog):
    shard_dir = _burst_shards(tmp_path / "shards")
    red = tmp_path / "red"
    assert _cli("redundancy", "--shards", str(shard_dir), "--out", str(red), "--no-progress") == 0
    dups = set((red / "duplicates.txt").read_text().split())
    assert len(dups) == 40

    assert _split(str(shard_dir), "--exclude", str(red / "duplicates.txt"), "--fractions", "1,0.5,0.1",
                  "--out", str(tmp_path / "ex")) == 0
    full = (tmp_path / "ex" / "split-1.0.txt").read_text().split()
    assert len(full) == 60 and not set(full) & dups

    assert _split(str(shard_dir), "--method", "cluster-balanced", "--clusters", str(red),
                  "--fractions", "1,0.3,0.1", "--out", str(tmp_path / "cb")) == 0
    s = {f: (tmp_path / "cb" / f"split-{f}.txt").read_text().split() for f in ("1.0", "0.3", "0.1")}
    assert set(s["0.1"]) <= set(s["0.3"]) <= set(s["1.0"]) and len(s["1.0"]) == 100
    assert len(s["0.1"]) == 10
    from facesift.analysis.selection import read_clusters
    clusters = read_clusters(red)
    # 10% = one key from each of 10 different k-means clusters (random would repeat big ones)
    assert len({clusters[k] for k in s["0.1"]}) == min(10, len(set(clusters.values())))
    summary = json.loads((tmp_path / "cb" / "split.json").read_text())
    assert summary["config"]["method"] == "cluster-balanced"

    # cluster-typical: the same round-robin, each cluster's face nearest its centroid first
    assert _split(str(shard_dir), "--method", "cluster-typical", "--clusters", str(red),
                  "--fractions", "1,0.3,0.1", "--out", str(tmp_path / "ct")) == 0
    t = {f: (tmp_path / "ct" / f"split-{f}.txt").read_text().split() for f in ("1.0", "0.3", "0.1")}
    assert set(t["0.1"]) <= set(t["0.3"]) <= set(t["1.0"]) and len(t["0.1"]) == 10
    from facesift.analysis.selection import read_cluster_table
    table = read_cluster_table(red)
    top: dict[int, float] = {}
    for cluster, sim in table.values():
        top[cluster] = max(sim, top.get(cluster, sim))
    # every cluster the 10 % reaches gives its most typical face (round one of the round-robin)
    assert len({table[k][0] for k in t["0.1"]}) == min(10, len(top))
    if len(top) >= 10:
        assert all(table[k][1] == top[table[k][0]] for k in t["0.1"])

    caplog.clear()
    assert _split(str(shard_dir), "--method", "cluster-balanced", "--out", str(tmp_path / "bad")) == 2
    assert "needs --clusters" in caplog.text
