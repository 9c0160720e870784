"""Index order as row numbers: samples per shard, one rank's slice, and rows [start, stop) streamed.

Row i of a shard set is its i-th sample in index order (shards in index order, tar order
within a shard): the order every per-sample output follows (`facesift embed`'s
`embeddings.npy`, the rows of the redundancy report). A range is read with
`reader.iter_samples`: only the shards holding it are opened, and the rows before it are
skipped without reading their data (local shards seek past them).
"""
from __future__ import annotations

from itertools import accumulate
from typing import Any, Container, Iterator, Sequence

from facesift.shards.index import index_entries, index_location, shard_urls
from facesift.shards.reader import iter_keys, iter_samples


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
