"""Damaged shards: the one policy every command that reads a shard set follows.

A shard is damaged when it cannot be read to its end: missing though listed, empty, not a tar,
cut off, or with a corrupt header (`reader.DamagedShard` says which). Such a shard is read up to
the damage and skipped from there: its samples known to be complete count, nothing after them.
Every consumer then sees the same samples — `shards info` counts exactly the keys `shards split`
lists and `shards sample` draws from. One warning line names the shard and the reason, the
summary counts it (`damaged_shards=N`), and the command exits 1 at the end so scripts notice;
never a traceback. `facesift embed` refuses instead (its rows must follow the index, see
analysis/embed.py), also with exit 1. docs/shards.md, "Damaged shards", is the user's version.
"""
from __future__ import annotations

import logging
from typing import Any

from facesift.shards.reader import DamagedShard

log = logging.getLogger("facesift.shards")

DAMAGED_EXIT = 1  # the exit status of a command that met a damaged shard (0 ok, 2 bad input)


def describe(exc: DamagedShard) -> str:
    """The one warning line for a damaged shard: which, why, and what of it was used."""
    if exc.samples:
        return (f"damaged shard {exc.url}: {exc.reason}; skipped from the damage on "
                f"(its {exc.samples} complete sample(s) before it are used)")
    return f"damaged shard {exc.url}: {exc.reason}; skipped (no sample of it is used)"


class DamageTally:
    """The damaged shards one command met: each named once (one warning line), all counted."""

    def __init__(self) -> None:
        self._shards: dict[str, DamagedShard] = {}

    def add(self, exc: DamagedShard) -> None:
        """Record a damaged shard; a shard met again (a re-read) is not named twice."""
        if exc.url not in self._shards:
            self._shards[exc.url] = exc
            log.warning("%s", describe(exc))

    def __len__(self) -> int:
        return len(self._shards)

    def __bool__(self) -> bool:
        return bool(self._shards)

    @property
    def shards(self) -> list[DamagedShard]:
        return list(self._shards.values())

    def as_json(self) -> list[dict[str, Any]]:
        """What summaries and `--json` outputs list: shard, reason, complete samples used."""
        return [{"shard": e.url, "reason": e.reason, "samples": e.samples} for e in self._shards.values()]

    def exit_code(self) -> int:
        return DAMAGED_EXIT if self._shards else 0
