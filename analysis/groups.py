"""Duplicate groups from a pair list, and which member of each group to keep.

Two ways to group:
  * `components`: connected components of the pair graph (scipy.sparse.csgraph). Simple and
    exact, but it chains: A~B and B~C put A and C together even when they are far apart.
  * `semdedup`: SemDeDup-style (Abbas et al., 2023). Spherical k-means partitions the data;
    within each cluster members are ranked by the keep policy and a member is a duplicate
    when it is within the threshold of a higher-ranked *kept* member (SemDeDup proper
    compares with every higher-ranked member, which lets removals chain); it joins the best
    such member's group. Blockwise inside the cluster: memory O(block x cluster size).
    Every member of a group is therefore within the threshold of the one kept.
Keep policies: `easy` keeps the most typical member (closest to its group's / cluster's
mean), `hard` the least typical, `random` a member chosen by a seeded hash of its key.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from facesift.shards.split import key_score

POLICIES = ("easy", "hard", "random")


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Component label of every row (singletons get their own label)."""
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _rank(x: np.ndarray, members: np.ndarray, keys: list[str], policy: str, seed: int,
          centre: np.ndarray | None = None) -> np.ndarray:
    """Members ordered best-to-keep first."""
    if policy == "random":
        return members[np.argsort([key_score(keys[m], seed) for m in members], kind="stable")]
    if policy not in POLICIES:
        raise ValueError(f"keep policy must be one of {POLICIES}, not {policy!r}")
    vecs = np.asarray(x[members], dtype=np.float32)
    if centre is None:
        centre = vecs.mean(0)
    sims = vecs @ centre
    order = np.argsort(-sims if policy == "easy" else sims, kind="stable")
    return members[order]


def groups_from_pairs(x: np.ndarray, i: np.ndarray, j: np.ndarray, keys: list[str], policy: str = "easy",
                      seed: int = 0) -> list[dict]:
    """Groups (size >= 2) of the pair graph's components: {"rows": [...], "keep": row}, largest first."""
    n = len(keys)
    labels = components(n, i, j)
    sizes = np.bincount(labels)
    multi = np.nonzero(sizes >= 2)[0]
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups = []
    for label in multi:
        members = order[starts[label]:starts[label + 1]]
        ranked = _rank(x, members, keys, policy, seed)
        groups.append({"rows": sorted(members.tolist()), "keep": int(ranked[0])})
    groups.sort(key=lambda g: (-len(g["rows"]), g["rows"][0]))
    return groups


def semdedup_groups(x: np.ndarray, cluster: np.ndarray, centroids: np.ndarray, keys: list[str],
                    threshold: float, policy: str = "easy", seed: int = 0, block: int = 2048,
                    valid: np.ndarray | None = None) -> list[dict]:
    """SemDeDup within k-means clusters (see module docstring)."""
    groups: dict[int, list[int]] = {}
    rows_all = np.arange(len(keys)) if valid is None else np.nonzero(valid)[0]
    by_cluster = np.argsort(cluster[rows_all], kind="stable")
    sorted_rows = rows_all[by_cluster]
    bounds = np.searchsorted(cluster[sorted_rows], np.arange(len(centroids) + 1))
    for c in range(len(centroids)):
        members = sorted_rows[bounds[c]:bounds[c + 1]]
        if len(members) < 2:
            continue
        ranked = _rank(x, members, keys, policy, seed, centre=centroids[c])
        for p, q in _leaders(np.asarray(x[ranked], dtype=np.float32), threshold, block):
            groups.setdefault(int(ranked[q]), [int(ranked[q])]).append(int(ranked[p]))
    out = [{"rows": sorted(rows), "keep": keep} for keep, rows in groups.items()]
    out.sort(key=lambda g: (-len(g["rows"]), g["rows"][0]))
    return out


def _leaders(vecs: np.ndarray, threshold: float, block: int) -> list[tuple[int, int]]:
    """Greedy leader selection over rows in rank order: (duplicate, kept leader) positions.

    A row joins the best already-kept row within the threshold, else it is kept. Earlier
    blocks are matched with one matrix product; inside a block rows are resolved in order.
    """
    kept: list[int] = []
    out: list[tuple[int, int]] = []
    for a in range(0, len(vecs), block):
        vb = vecs[a:a + block]
        dup_of = np.full(len(vb), -1, dtype=np.int64)
        if kept:
            kept_arr = np.asarray(kept)
            sims = vb @ vecs[kept_arr].T
            best = sims.argmax(1)
            hit = sims[np.arange(len(vb)), best] >= threshold
            dup_of[hit] = kept_arr[best[hit]]
        inner = vb @ vb.T
        local: list[int] = []
        for p in range(len(vb)):
            if dup_of[p] < 0 and local:
                s = inner[p, local]
                q = int(s.argmax())
                if s[q] >= threshold:
                    dup_of[p] = a + local[q]
            if dup_of[p] < 0:
                local.append(p)
            else:
                out.append((a + p, int(dup_of[p])))
        kept.extend(a + p for p in local)
    return out
