"""Redundancy measures: threshold sweep, k-means cluster sizes and their effective number,
nearest-neighbour similarity distribution, and breakdowns by owner / query / source.

The effective number of clusters is exp(entropy) of the cluster-size distribution: K when
all K clusters are equally full, near 1 when one cluster holds almost everything — a
redundancy measure that needs no threshold. Per-owner breakdowns matter because crawled data
is redundant mostly through photo bursts: one owner uploading many near-identical shots.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from facesift.analysis.groups import components


def dedup_counts(n: int, i: np.ndarray, j: np.ndarray) -> dict:
    """Groups, rows in groups and removable rows for one pair list over n rows."""
    if len(i) == 0:
        return {"pairs": 0, "groups": 0, "rows_in_groups": 0, "duplicates": 0, "unique": n,
                "unique_fraction": 1.0 if n else 0.0, "duplicate_rate": 0.0}
    sizes = np.bincount(components(n, i, j))
    multi = sizes[sizes >= 2]
    dups = int(multi.sum() - len(multi))
    return {"pairs": int(len(i)), "groups": int(len(multi)), "rows_in_groups": int(multi.sum()),
            "duplicates": dups, "unique": n - dups, "unique_fraction": (n - dups) / n,
            "duplicate_rate": dups / n, "largest_group": int(multi.max())}


def sweep(n: int, thresholds: list[float], exact: tuple[np.ndarray, np.ndarray, np.ndarray], exact_at: float,
          graph_pairs_at, saturated_at) -> list[dict]:
    """Counts at each threshold. At/above `exact_at` the exact pair list is filtered; below it the
    k-NN graph is used and rows whose neighbour list was full are reported (`saturated_rows`)."""
    ei, ej, es = exact
    out = []
    for t in sorted(set(thresholds) | {exact_at}):
        if t >= exact_at:
            keep = es >= t
            row = dedup_counts(n, ei[keep], ej[keep])
            row.update(threshold=t, source="exact", saturated_rows=0)
        else:
            i, j, _ = graph_pairs_at(t)
            row = dedup_counts(n, i, j)
            row.update(threshold=t, source="knn", saturated_rows=int(len(saturated_at(t))))
        out.append(row)
    return out


def spherical_kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0, train_max: int = 256_000,
                     gpu: bool = False, redo: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, cosine to own centroid, centroids) with faiss.Kmeans(spherical=True)."""
    import faiss
    n, d = x.shape
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    train = x if n <= train_max else x[np.sort(rng.choice(n, train_max, replace=False))]
    km = faiss.Kmeans(d, k, niter=iters, spherical=True, seed=seed, gpu=gpu, verbose=False, nredo=redo,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, train_max // k + 1))
    km.train(np.ascontiguousarray(train, dtype=np.float32))
    labels = np.empty(n, dtype=np.int64)
    sims = np.empty(n, dtype=np.float32)
    for a in range(0, n, 262144):
        D, I = km.index.search(np.ascontiguousarray(x[a:a + 262144], dtype=np.float32), 1)
        labels[a:a + len(I)] = I[:, 0]
        sims[a:a + len(I)] = D[:, 0]
    return labels, sims, km.centroids


def cluster_stats(labels: np.ndarray, k: int) -> dict:
    sizes = np.bincount(labels, minlength=k)
    p = sizes[sizes > 0] / sizes.sum()
    entropy = float(-(p * np.log(p)).sum())
    return {"clusters": int(k), "non_empty": int((sizes > 0).sum()), "effective_clusters": math.exp(entropy),
            "effective_fraction": math.exp(entropy) / k, "entropy": entropy,
            "largest": int(sizes.max()), "median": float(np.median(sizes)), "sizes": sizes.tolist()}


def default_clusters(n: int) -> int:
    return int(min(4096, max(2, round(math.sqrt(n)))))


def nn_stats(nn_sims: np.ndarray) -> dict:
    finite = nn_sims[np.isfinite(nn_sims)]
    if len(finite) == 0:
        return {"rows": 0}
    q = np.quantile(finite, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    return {"rows": int(len(finite)), "mean": float(finite.mean()),
            **{f"p{int(p * 100):02d}": float(v) for p, v in zip([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99], q)}}


def breakdown(meta: list[dict], field: str, duplicate_rows: set[int], pairs: tuple[np.ndarray, np.ndarray],
              top: int = 25) -> dict:
    """Per value of `field` (owner, query, source): images, duplicates, rate; and how many duplicate
    pairs stay within one value (bursts) — the share that de-duplicating per owner would catch."""
    values = [m.get(field) for m in meta]
    known = [v for v in values if v is not None]
    if not known:
        return {"field": field, "known": 0}
    images = Counter(known)
    dups: Counter = Counter()
    for r in duplicate_rows:
        if values[r] is not None:
            dups[values[r]] += 1
    i, j = pairs
    within = sum(1 for a, b in zip(i.tolist(), j.tolist()) if values[a] is not None and values[a] == values[b])
    rows = [{"value": str(v), "images": c, "duplicates": dups[v], "duplicate_rate": dups[v] / c}
            for v, c in images.most_common()]
    rows.sort(key=lambda r: (-r["duplicates"], -r["images"], r["value"]))
    return {"field": field, "known": len(known), "distinct": len(images),
            "pairs_within_same": within, "pairs": int(len(i)),
            "within_share": within / len(i) if len(i) else 0.0, "top": rows[:top]}
