"""Pose-balanced pretraining: flatten the yaw distribution of the stream, with a cap.

Web faces are mostly frontal (the paper's §6 points at it): a model pretrained on them sees a
profile face rarely. `data.pose_balance` keeps each sample with a probability that depends on
its yaw bin, so the kept stream's yaw histogram is as flat as the cap allows:

    weight(bin) = min(cap, 1 / (bins × share(bin)))      (1 = the bin's natural rate)
    keep(bin)   = weight(bin) / max(weight)

A bin with a tenth of the uniform share is kept at up to `cap` times the rate of its natural
frequency relative to the others, never more: a handful of profile faces are not repeated
hundreds of times an epoch. Samples without a stored yaw (curate's `--detector none`, or a
crop whose landmarks were missing) keep weight 1: neither favoured nor dropped relative to
their natural frequency.

Why rejection and not a weighted sampler: the stream is infinite and sharded, so a sample is
only ever seen, not indexed. Keeping or dropping it is a pure function of (seed, epoch, key),
decided before the shuffle buffer — so the kept stream is as deterministic as the unfiltered
one, resume stays exact (the stream position counts kept samples), and every rank still gets
the same number of batches (the epoch is cut by steps, not by samples).

The histogram is counted once from the shards' json members (no image is decoded) and written
to `<out>/pose_balance.json`; it is a function of the shards alone, so every rank and every
resume computes the same table.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass

from facesift.shards.reader import DamagedShard, iter_samples

log = logging.getLogger(__name__)

YAW_RANGE = 90.0   # degrees; curate's estimate lies in [-90, 90]


@dataclass(frozen=True)
class PoseTable:
    """Per-bin keep probabilities over signed yaw in [-90, 90] (`keep_missing` for no yaw)."""
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int
    keep: tuple[float, ...]
    keep_missing: float

    def keep_probability(self, yaw: float | None) -> float:
        if yaw is None or not math.isfinite(yaw):
            return self.keep_missing
        return self.keep[yaw_bin(yaw, len(self.keep))]

    def kept_share(self) -> float:
        """The expected fraction of the stream kept (the reading cost is 1 / this)."""
        total = sum(self.counts) + self.missing
        kept = sum(c * k for c, k in zip(self.counts, self.keep)) + self.missing * self.keep_missing
        return kept / total if total else 1.0

    def as_dict(self) -> dict:
        return {"edges": list(self.edges), "counts": list(self.counts), "missing": self.missing,
                "keep": list(self.keep), "keep_missing": self.keep_missing, "kept_share": self.kept_share()}


def yaw_bin(yaw: float, bins: int) -> int:
    """Equal-width bins over [-90, 90]; a yaw outside lands in the end bin."""
    y = min(max(yaw, -YAW_RANGE), YAW_RANGE)
    return min(bins - 1, int((y + YAW_RANGE) / (2 * YAW_RANGE) * bins))


def sample_yaw(sample: dict) -> float | None:
    """The stored yaw of a shard sample (its json member), or None."""
    raw = sample.get("json")
    if raw is None:
        return None
    try:
        value = json.loads(raw).get("yaw")
        return float(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def yaw_counts(urls: list[str], bins: int, keys: set[str] | None = None) -> tuple[list[int], int]:
    """(per-bin counts, samples without a yaw) over the shards' json members. Damaged shards
    count their complete samples, as every reader of them does."""
    counts, missing = [0] * bins, 0
    for url in urls:
        try:
            for sample in iter_samples(url, extensions={"json"}):
                if keys is not None and sample["__key__"] not in keys:
                    continue
                yaw = sample_yaw(sample)
                if yaw is None or not math.isfinite(yaw):
                    missing += 1
                else:
                    counts[yaw_bin(yaw, bins)] += 1
        except DamagedShard:
            continue
    return counts, missing


def _edges(bins: int) -> list[float]:
    return [-YAW_RANGE + 2 * YAW_RANGE * i / bins for i in range(bins + 1)]


def pose_table(counts: list[int], missing: int, cap: float) -> PoseTable:
    """Keep probabilities that flatten `counts`, no bin weighted above `cap` (see the module doc)."""
    if cap < 1:
        raise ValueError(f"data.pose_cap must be >= 1, got {cap}")
    bins, total = len(counts), sum(counts)
    if total == 0:
        raise ValueError("data.pose_balance: no sample in the shards has a yaw (curate stores it "
                         "when a detector found landmarks); turn pose_balance off")
    occupied = [c for c in counts if c]
    # the uniform share is over the bins that hold faces: an empty bin cannot be filled
    weights = [min(cap, total / (len(occupied) * c)) if c else 0.0 for c in counts]
    top = max(max(weights), 1.0 if missing else 0.0)
    return PoseTable(tuple(_edges(bins)), tuple(counts), missing, tuple(w / top for w in weights),
                     1.0 / top if missing else 0.0)


def keep_sample(table: PoseTable, key: str, yaw: float | None, seed: int, epoch: int) -> bool:
    """A pure function of (seed, epoch, key): the same sample is kept or dropped the same way on
    every rank, worker and resume; another epoch draws again."""
    p = table.keep_probability(yaw)
    if p >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < p


def describe(table: PoseTable) -> str:
    """One log line: the histogram and what balancing keeps of it."""
    cells = ", ".join(f"[{table.edges[i]:+.0f},{table.edges[i + 1]:+.0f}) {c} keep {k:.2f}"
                      for i, (c, k) in enumerate(zip(table.counts, table.keep)))
    return (f"pose balance: {cells}; no yaw {table.missing} keep {table.keep_missing:.2f}; "
            f"{table.kept_share():.1%} of the stream kept")
