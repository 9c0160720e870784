"""Which labelled samples a run may use: nested fractions of the training pool, and the
validation split the hyper-parameter search carves out of them.

Membership is decided by `shards.split` hashes of (seed, key), so 2% ⊂ 10% ⊂ 100% for a seed,
different seeds draw different subsets (the spread the curve reports), and adding or reordering
samples never moves another sample in or out. A fraction can instead come from a key list
written by `facesift shards split` (or a redundancy-aware selection): one key per line.
"""
from __future__ import annotations

from pathlib import Path

from facesift.shards.split import in_fraction, key_score
from facesift.shards.split import read_key_list as _read_keys

VAL_SALT = 104729   # decorrelates the validation split from the fraction hashes


def fraction_subset(records: list[dict], fraction: float, seed: int) -> list[dict]:
    """The records in the `fraction` subset for `seed`, in their original order."""
    return [r for r in records if in_fraction(r["key"], fraction, seed)]


def read_key_list(path: str | Path) -> set[str]:
    """Keys from a `shards split` list (one per line, `#` comments)."""
    keys = set(_read_keys(path))
    if not keys:
        raise ValueError(f"{path}: empty key list")
    return keys


def parse_fraction_keys(items: list[str]) -> dict[float, str]:
    """["0.1=keys10.txt", ...] -> {0.1: "keys10.txt"}."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"fraction key list {item!r}: expected FRACTION=PATH")
        frac, path = item.split("=", 1)
        out[float(frac)] = path
    return out


def keyed_subset(records: list[dict], keys: set[str]) -> list[dict]:
    """Records whose key is in a key list."""
    out = [r for r in records if r["key"] in keys]
    if not out:
        raise ValueError("no training sample matches the key list (keys are dataset paths without "
                         "extension, '/' and '.' replaced by '-')")
    return out


def validation_split(records: list[dict], fraction: float, seed: int, minimum: int = 1) -> tuple[list[dict], list[dict]]:
    """(fit, val): about `fraction` of `records` held out for model selection, at least `minimum`
    and never all of them; the same records always land on the same side for a seed."""
    if len(records) < 2:
        raise ValueError(f"{len(records)} labelled sample(s): too few to carve a validation split")
    ranked = sorted(records, key=lambda r: key_score(r["key"], seed + VAL_SALT))
    n_val = sum(key_score(r["key"], seed + VAL_SALT) < fraction for r in records)
    n_val = min(max(n_val, minimum), len(records) - 1)
    val_keys = {r["key"] for r in ranked[:n_val]}
    return [r for r in records if r["key"] not in val_keys], [r for r in records if r["key"] in val_keys]
