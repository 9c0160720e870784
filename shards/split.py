"""Deterministic, nested data fractions decided by hashing (seed, key).

A sample's membership depends only on its key and the seed — never on file order, shard
layout or how many other samples exist — so 2% ⊂ 10% ⊂ 100% holds by construction and the
same split can be recomputed anywhere (curate, pretrain, finetune) without shipping lists.
"""
from __future__ import annotations

import hashlib

_SCALE = float(2**64)


def key_score(key: str, seed: int = 0) -> float:
    """Uniform value in [0, 1) for (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_fraction(key: str, fraction: float, seed: int = 0) -> bool:
    """True when `key` belongs to the `fraction` subset; subsets for smaller fractions nest inside."""
    return fraction >= 1.0 or key_score(key, seed) < fraction
