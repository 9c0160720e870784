"""Redundancy-aware data selection for `facesift shards split`: nested and deterministic.

`cluster-balanced`: the k-means clusters of `facesift redundancy` (clusters.tsv) are visited
round-robin — every cluster gives its first member (by key hash), then every cluster its
second, and so on — and a fraction f takes the first f*N keys of that order. Small fractions
therefore spread over all clusters instead of mirroring the redundancy of the crawl (a burst
of 200 near-identical shots of one owner costs one slot per round, not 200/N of the budget).
Because every fraction is a prefix of one fixed order, 2% ⊂ 10% ⊂ 100% holds by construction.
Keys the clustering has not seen (added after it ran) count as clusters of their own.
`cluster-typical` is the same round-robin with each cluster's members ordered by their similarity
to its centroid (the most typical face first) instead of by key hash.
`cluster_balanced_method` is the form `shards.split.split_shards` takes as a selection method;
`facesift shards split` passes it in (shards/ imports no stage above it).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from facesift.shards.config import SplitConfig
from facesift.shards.split import key_score

CLUSTERS_FILE = "clusters.tsv"


def read_cluster_table(path: str | Path) -> dict[str, tuple[int, float | None]]:
    """key -> (cluster, similarity to its centroid or None) from `clusters.tsv` (or a redundancy
    output directory holding one).

    The file is written atomically, so a line that is not `key<TAB>cluster[<TAB>sim]`, or a last
    line without its newline, means it was cut off or edited: a ValueError naming file and line,
    because a silently shorter cluster list would turn the missing keys into clusters of their own."""
    path = Path(path)
    if path.is_dir():
        path = path / CLUSTERS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no cluster assignments (run `facesift redundancy` first)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a clusters.tsv (not text)") from None
    if text and not text.endswith("\n"):
        raise ValueError(f"{path}: the last line is cut off (the file is truncated); re-run `facesift redundancy`")
    out: dict[str, tuple[int, float | None]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split("\t")
        if n == 1 and parts[0] == "key":
            continue
        if len(parts) < 2 or not parts[0] or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: not 'key<TAB>cluster' ({line[:60]!r}); re-run `facesift redundancy`")
        sim = None
        if len(parts) > 2 and parts[2]:
            try:
                sim = float(parts[2])
            except ValueError:
                raise ValueError(f"{path}:{n}: centroid similarity {parts[2]!r} is not a number") from None
        out[parts[0]] = (int(parts[1]), sim)
    if not out:
        raise ValueError(f"{path}: no cluster assignments in it")
    return out


def split_table(table: dict[str, tuple[int, float | None]]) -> tuple[dict[str, int], dict[str, float]]:
    """(key -> cluster, key -> centroid similarity where the table has one)."""
    return {k: c for k, (c, _) in table.items()}, {k: s for k, (_, s) in table.items() if s is not None}


def read_clusters(path: str | Path) -> dict[str, int]:
    """key -> cluster from `clusters.tsv` (see `read_cluster_table`)."""
    return split_table(read_cluster_table(path))[0]


def balanced_order(keys: Iterable[str], clusters: dict[str, int], seed: int = 0,
                   typicality: dict[str, float] | None = None) -> list[str]:
    """All keys in round-robin-over-clusters order (see module docstring). Within a cluster the
    members go by key hash, or with `typicality` (similarity to the centroid) most typical first."""
    members: dict[object, list[str]] = defaultdict(list)
    for key in keys:
        members[clusters.get(key, ("unclustered", key))].append(key)
    ranked = []
    for cluster, ks in members.items():
        if typicality is None:
            ks.sort(key=lambda k: key_score(k, seed))
        else:
            ks.sort(key=lambda k: (-typicality.get(k, float("-inf")), key_score(k, seed)))
        tie = key_score(f"cluster:{cluster}", seed)
        ranked.extend((rank, tie, k) for rank, k in enumerate(ks))
    ranked.sort()
    return [k for _, _, k in ranked]


def cluster_balanced_splits(keys: Sequence[str], fractions: Sequence[float], clusters: dict[str, int],
                            seed: int = 0, typicality: dict[str, float] | None = None) -> dict[float, list[str]]:
    """{fraction: keys}, each list in the order of `keys` (index order), nested by construction."""
    keys = list(keys)
    order = balanced_order(keys, clusters, seed, typicality)
    position = {k: p for p, k in enumerate(order)}
    n = len(keys)
    out = {}
    for f in fractions:
        take = n if f >= 1.0 else int(round(f * n))
        out[f] = [k for k in keys if position[k] < take]
    return out


def cluster_balanced_method(keys: list[str], fractions: list[float], cfg: SplitConfig) -> dict[float, list[str]]:
    """`--method cluster-balanced`: round-robin over the clusters of `cfg.clusters`."""
    if not cfg.clusters:
        raise ValueError("--method cluster-balanced needs --clusters (clusters.tsv or a `facesift redundancy` "
                         "output directory)")
    return cluster_balanced_splits(keys, fractions, read_clusters(cfg.clusters), cfg.seed)


def cluster_typical_method(keys: list[str], fractions: list[float], cfg: SplitConfig) -> dict[float, list[str]]:
    """`--method cluster-typical`: round-robin over the clusters, each cluster's most typical
    member (nearest its centroid) first, so a small fraction labels one clean exemplar per cluster."""
    if not cfg.clusters:
        raise ValueError("--method cluster-typical needs --clusters (clusters.tsv or a `facesift redundancy` "
                         "output directory)")
    clusters, sims = split_table(read_cluster_table(cfg.clusters))
    if not sims:
        raise ValueError(f"{cfg.clusters}: no centroid similarities (clusters.tsv from an older `facesift redundancy`)")
    return cluster_balanced_splits(keys, fractions, clusters, cfg.seed, sims)


# the redundancy-aware `facesift shards split --method` values (random is shards.split's own)
SELECTION_METHODS = {"cluster-balanced": cluster_balanced_method, "cluster-typical": cluster_typical_method}
