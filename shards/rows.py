"""Index order as row numbers: samples per shard, one rank's slice, and rows [start, stop) streamed.

Row i of a shard set is its i-th sample in index order (shards in index order, tar order
within a shard): the order every per-sample output follows (`facesift embed`'s
`embeddings.npy`, the rows of the redundancy report). A range is read with
`reader.iter_samples`: only the shards holding it are opened, and the rows before it are
skipped without reading their data (local shards seek past them).

A run whose rows must follow the index (`facesift embed`) checks the counts first with
`scan_counts`: a damaged shard or a stale index found half-way would leave every later row
shifted, so they are found before any row is written.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Container, Iterator, Sequence

from facesift.shards.index import index_entries, index_location, local_path, shard_urls
from facesift.shards.reader import DamagedShard, iter_keys, iter_samples


class StaleCountError(ValueError):
    """A shard does not hold the number of samples it was counted with (stale index, truncated shard)."""


def shard_counts(spec: Any) -> tuple[list[str], list[int]]:
    """Shard URLs and samples per shard: from index.json `nsamples` when present, else counted."""
    urls = shard_urls(spec)
    counts: list[int | None] = [None] * len(urls)
    location = index_location(spec)
    if location is not None:
        entries = index_entries(location)
        if [u for u, _ in entries] == urls:
            counts = [e.get("nsamples") for _, e in entries]
    for i, url in enumerate(urls):
        if counts[i] is None:
            counts[i] = sum(1 for _ in iter_keys(url))
    return urls, [int(c) for c in counts]


@dataclass
class ShardTable:
    """Samples per shard of a shard set, and what would stop its rows from following the index."""
    urls: list[str]
    counts: list[int]
    damaged: list[DamagedShard] = field(default_factory=list)  # shards that do not read to their end
    stale: list[str] = field(default_factory=list)              # "url: the index says N, the shard holds M"


def _index_counts(spec: Any, urls: list[str]) -> list[int | None]:
    """`nsamples` of each shard from the index behind `spec`, None where there is none."""
    location = index_location(spec)
    if location is not None:
        entries = index_entries(location)
        if [u for u, _ in entries] == urls:
            return [None if e.get("nsamples") is None else int(e["nsamples"]) for _, e in entries]
    return [None] * len(urls)


def _walk(url: str) -> tuple[int, DamagedShard | None]:
    """Complete samples in one shard (tar headers only) and its damage, if any."""
    try:
        return sum(1 for _ in iter_keys(url)), None
    except DamagedShard as exc:
        return exc.samples, exc


def scan_counts(spec: Any, workers: int = 8) -> ShardTable:
    """Samples per shard, checked: local shards are always walked (headers only, seeking over the
    data: cheap) and compared with the index's `nsamples`; remote shards are read only when the
    index gives no count (their damage is met, and reported, while they are read)."""
    urls = shard_urls(spec)
    expected = _index_counts(spec, urls)
    walk = [i for i, u in enumerate(urls) if local_path(u) is not None or expected[i] is None]
    with ThreadPoolExecutor(max(1, min(workers, len(walk) or 1))) as pool:
        walked = dict(zip(walk, pool.map(_walk, [urls[i] for i in walk])))
    table = ShardTable(urls, [0] * len(urls))
    for i, url in enumerate(urls):
        if i not in walked:
            table.counts[i] = int(expected[i])
            continue
        found, damage = walked[i]
        table.counts[i] = found
        if damage is not None:
            table.damaged.append(damage)
        elif expected[i] is not None and expected[i] != found:
            table.stale.append(f"{url}: the index says {expected[i]} samples, the shard holds {found}")
    return table


def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of one rank; slices cover 0..n exactly once."""
    return n * rank // world, n * (rank + 1) // world


def iter_rows(urls: Sequence[str], counts: Sequence[int], start: int, stop: int,
              extensions: Container[str] | None = None) -> Iterator[dict]:
    """Samples of rows [start, stop) in index order, as `reader.iter_samples` dicts of raw bytes
    (only the members in `extensions`, all when None). A shard holding fewer samples than its
    count — or, when read to its end, more — raises StaleCountError: the rows would not line up."""
    offsets = [0, *accumulate(counts)]
    for s, url in enumerate(urls):
        first, last = max(start, offsets[s]), min(stop, offsets[s + 1])
        if first >= last:
            continue
        skip, take = first - offsets[s], last - first
        to_end = last == offsets[s + 1]
        seen = yielded = 0

        def select(key: str) -> bool:
            nonlocal seen
            seen += 1
            return skip < seen <= skip + take

        for sample in iter_samples(url, extensions, select=select):
            yield sample
            yielded += 1
            if yielded == take and not to_end:
                break
        if yielded < take or (to_end and seen != counts[s]):
            cause = " or the shard is truncated" if seen < counts[s] else ""
            raise StaleCountError(f"{url}: expected {counts[s]} samples, found {seen}: the index is stale "
                                  f"(re-run `facesift shards verify`){cause}")
