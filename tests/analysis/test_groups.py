"""Grouping, keep policies, measures and selection on small hand-made cases."""
from __future__ import annotations

import math

import numpy as np

from facesift.analysis.groups import components, groups_from_pairs, semdedup_groups
from facesift.analysis.measures import cluster_stats, dedup_counts, spherical_kmeans
from facesift.analysis.selection import cluster_balanced_splits, read_clusters


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_components_and_keep_policies():
    # a chain 0-1-2, a pair 3-4, a singleton 5
    x = _unit([[1, 0, 0], [0.9, 0.1, 0], [0.8, 0.2, 0], [0, 1, 0], [0, 0.95, 0.05], [0, 0, 1]])
    i, j = np.array([0, 1, 3]), np.array([1, 2, 4])
    labels = components(6, i, j)
    assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] != labels[5]
    keys = [f"k{n}" for n in range(6)]
    easy = groups_from_pairs(x, i, j, keys, "easy")
    hard = groups_from_pairs(x, i, j, keys, "hard")
    assert [g["rows"] for g in easy] == [[0, 1, 2], [3, 4]]
    assert easy[0]["keep"] == 1          # the middle of the chain is most typical
    assert hard[0]["keep"] in (0, 2)
    rnd = [groups_from_pairs(x, i, j, keys, "random", seed=s)[0]["keep"] for s in range(8)]
    assert set(rnd) <= {0, 1, 2} and len(set(rnd)) > 1          # seeded, not constant
    c = dedup_counts(6, i, j)
    assert (c["groups"], c["duplicates"], c["unique"]) == (2, 3, 3)


def test_semdedup_does_not_chain():
    # points along an arc 10 degrees apart: each neighbour pair has cos 0.985, ends are far apart
    ang = np.radians(np.arange(0, 60, 10))
    x = _unit(np.stack([np.cos(ang), np.sin(ang), np.zeros_like(ang)], 1))
    keys = [f"k{n}" for n in range(len(x))]
    i, j = np.arange(len(x) - 1), np.arange(1, len(x))
    comp = groups_from_pairs(x, i, j, keys, "easy")
    assert len(comp) == 1 and len(comp[0]["rows"]) == 6       # components chain end to end
    cluster = np.zeros(len(x), np.int64)
    sem = semdedup_groups(x, cluster, _unit(x.mean(0, keepdims=True)), keys, threshold=0.98, policy="easy")
    for g in sem:                                             # every member is close to its kept one
        kept = x[g["keep"]]
        assert all(x[r] @ kept >= 0.98 for r in g["rows"])
    assert sum(len(g["rows"]) - 1 for g in sem) < 5


def test_effective_number_of_clusters():
    s = cluster_stats(np.repeat(np.arange(4), 25), 4)
    assert math.isclose(s["effective_clusters"], 4.0)
    s = cluster_stats(np.array([0] * 97 + [1, 2, 3]), 4)
    assert 1.0 < s["effective_clusters"] < 1.3
    rng = np.random.default_rng(0)
    centres = _unit(rng.standard_normal((5, 16)))
    x = _unit(np.repeat(centres, 40, 0) + 0.05 * rng.standard_normal((200, 16)))
    labels, sims, _ = spherical_kmeans(x, 5, seed=0, redo=5)
    assert len(set(labels.tolist())) == 5 and sims.min() > 0.9
    assert math.isclose(cluster_stats(labels, 5)["effective_clusters"], 5.0, rel_tol=1e-6)


def test_cluster_balanced_splits_are_nested_and_balanced(tmp_path):
    keys = [f"img{n:04d}" for n in range(1000)]
    # one burst cluster holding 900 images, 100 clusters of one each
    clusters = {k: (0 if n < 900 else n) for n, k in enumerate(keys)}
    (tmp_path / "clusters.tsv").write_text("key\tcluster\tcentroid_sim\n" +
                                           "".join(f"{k}\t{c}\t1.0\n" for k, c in clusters.items()))
    assert read_clusters(tmp_path) == clusters
    splits = cluster_balanced_splits(keys, [1.0, 0.1, 0.02], clusters, seed=0)
    assert len(splits[1.0]) == 1000 and len(splits[0.1]) == 100 and len(splits[0.02]) == 20
    assert set(splits[0.02]) <= set(splits[0.1]) <= set(splits[1.0])
    assert splits[0.1] == [k for k in keys if k in set(splits[0.1])]        # index order kept
    burst = sum(clusters[k] == 0 for k in splits[0.1])
    assert burst == 1                       # random selection would take ~90 from the burst
    again = cluster_balanced_splits(list(reversed(keys)), [0.1], clusters, seed=0)
    assert set(again[0.1]) == set(splits[0.1])                              # order-independent
    other = cluster_balanced_splits(keys, [0.1], clusters, seed=1)
    assert set(other[0.1]) != set(splits[0.1])
