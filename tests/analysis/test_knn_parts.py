"""The k-NN graph in parts (the 100M-row path): merged parts equal one index, parts resume, a part
from other vectors is refused, and `redundancy --part K/N` runs then a merging run give the
groups of a one-piece run."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from facesift.analysis import knn_parts
from facesift.analysis.config import SearchConfig
from facesift.analysis.neardup import duplicate_pairs, knn_graph
from tests.analysis.test_embed import _cli
from tests.analysis.test_neardup import as_set, planted
from tests.analysis.test_redundancy import _burst_shards


def test_flat_parts_merge_to_the_one_index_graph(tmp_path):
    x = planted(3_000, 32, seed=7)
    whole, index = knn_graph(x, SearchConfig(k=8, index="flat"), progress=False)
    cfg = SearchConfig(k=8, index="flat", parts=3)
    merged = knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False)
    assert merged.info["parts_searched_here"] == 3
    assert np.allclose(merged.sims, whole.sims, atol=1e-5)
    # ties may come in another order; the neighbour sets are the same
    same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(merged.ids, whole.ids)]
    assert np.mean(same) > 0.999
    # the pairs at a threshold (saturated rows completed by exact products, no index) are the same
    i1, j1, _, _ = duplicate_pairs(x, whole, index, 0.9, cfg, progress=False)
    i2, j2, _, info = duplicate_pairs(x, merged, None, 0.9, cfg, progress=False)
    assert info["completion"] == "brute force" and as_set(i1, j1) == as_set(i2, j2)


def test_parts_resume_and_refuse_other_vectors(tmp_path):
    x = planted(2_000, 32, seed=8)
    cfg = SearchConfig(k=8, index="flat", parts=4)
    first = knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False)
    again = knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False)
    assert again.info["parts_searched_here"] == 0 and np.array_equal(first.ids, again.ids)
    knn_parts.part_path(tmp_path, 2, 4).unlink()           # a part lost (or never run): searched again
    assert knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False).info["parts_searched_here"] == 1
    other = x.copy()
    other[::500] = other[::-500]
    with pytest.raises(knn_parts.PartMismatch, match="digest"):
        knn_parts.graph_from_parts(other, cfg, 0, tmp_path, progress=False)
    knn_parts.part_path(tmp_path, 1, 4).write_bytes(b"not a part")
    with pytest.raises(knn_parts.PartMismatch, match="not a readable k-NN part"):
        knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False)


def test_ivf_parts_tune_each_part(tmp_path):
    x = planted(6_000, 32, seed=9)
    cfg = SearchConfig(k=8, index="ivf", parts=2, recall_sample=300)
    graph = knn_parts.graph_from_parts(x, cfg, 0, tmp_path, progress=False)
    for info in graph.info["part_info"]:
        assert info["index"] == "ivf" and info["pilot_recall"][info["nprobe"]] >= 0.99
    whole, _ = knn_graph(x, SearchConfig(k=8, index="flat"), progress=False)
    hits = np.mean([len(set(a.tolist()) & set(b.tolist())) / 8 for a, b in zip(graph.ids, whole.ids)])
    assert hits > 0.95


def test_part_runs_then_a_merging_run_equal_one_run(tmp_path, caplog):
    shards = _burst_shards(tmp_path / "shards")
    emb = tmp_path / "emb"
    assert _cli("embed", "--shards", str(shards), "--out", str(emb), "--no-progress") == 0
    one, parts = tmp_path / "one", tmp_path / "parts"
    assert _cli("redundancy", "--emb", str(emb), "--out", str(one), "--threshold", "0.9", "--no-progress") == 0
    for k in (0, 1, 2):
        assert _cli("redundancy", "--emb", str(emb), "--out", str(parts), "--part", f"{k}/3", "--no-progress") == 0
    assert not (parts / "summary.json").exists()             # a part run only searches
    assert sorted(p.name for p in (parts / "knn-parts").iterdir()) == [f"part-{k}-of-3.npz" for k in range(3)]
    assert _cli("redundancy", "--emb", str(emb), "--out", str(parts), "--threshold", "0.9", "--no-progress") == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (one, parts))
    assert b["search"]["parts"] == 3 and b["search"]["parts_searched_here"] == 0
    assert (a["groups"], a["duplicates"]) == (b["groups"], b["duplicates"]) == (10, 40) and a["pairs"] == b["pairs"]
    assert (one / "groups.jsonl").read_text() == (parts / "groups.jsonl").read_text()
    # a bad part spec is a clear error before any work
    caplog.clear()
    assert _cli("redundancy", "--emb", str(emb), "--out", str(tmp_path / "bad"), "--part", "3/3") == 2
    assert not (tmp_path / "bad").exists()
    assert any("--part" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
