"""Deterministic, nested data fractions decided by hashing (seed, key).

A sample's membership depends only on its key and the seed — never on file order, shard
layout or how many other samples exist — so 2% ⊂ 10% ⊂ 100% holds by construction and the
same split can be recomputed anywhere (curate, pretrain, finetune) without shipping lists.
`facesift shards split` still writes the lists (`split-<f>.txt`, index order, + `split.json`):
they are what other tools and people read, and what non-hash selection methods produce.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Sequence

_SCALE = float(2**64)


def key_score(key: str, seed: int = 0) -> float:
    """Uniform value in [0, 1) for (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_fraction(key: str, fraction: float, seed: int = 0) -> bool:
    """True when `key` belongs to the `fraction` subset; subsets for smaller fractions nest inside."""
    return fraction >= 1.0 or key_score(key, seed) < fraction


# ---- key lists on disk (`facesift shards split`) ----

SPLIT_SUMMARY = "split.json"


def parse_fractions(text: str | Sequence[float]) -> list[float]:
    """'1.0,0.1,0.02' -> [1.0, 0.1, 0.02], largest first; each in (0, 1], no repeats."""
    values = [float(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    if not values:
        raise ValueError("no fractions given")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ValueError(f"fractions must be in (0, 1]: {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"repeated fraction in {values}")
    return sorted(values, reverse=True)


def split_filename(fraction: float) -> str:
    """`split-0.1.txt` for 0.1: the fraction as Python prints it, so names round-trip."""
    return f"split-{float(fraction)!r}.txt"


def random_splits(keys: Iterable[str], fractions: Sequence[float], seed: int = 0) -> dict[float, list[str]]:
    """Nested subsets by key hash, each in the order of `keys` (index order)."""
    keys = list(keys)
    return {f: [k for k in keys if in_fraction(k, f, seed)] for f in fractions}


def check_nested(splits: dict[float, list[str]]) -> None:
    """Any selection method must give 2% ⊂ 10% ⊂ 100%: fail loudly if one does not."""
    ordered = sorted(splits, reverse=True)
    for larger, smaller in zip(ordered, ordered[1:]):
        outside = set(splits[smaller]) - set(splits[larger])
        if outside:
            raise ValueError(f"split {smaller} is not inside split {larger}: "
                             f"{len(outside)} key(s) e.g. {sorted(outside)[:3]}")


def read_key_list(path: str | Path) -> list[str]:
    """One key per line; blank lines and `#` comments ignored (exclude lists, split files)."""
    keys = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


def write_splits(out_dir: str | Path, splits: dict[float, list[str]], **summary: Any) -> Path:
    """Write `split-<f>.txt` per fraction and `split.json` (counts + `summary`), all atomically."""
    from facesift.common.atomic import atomic_write_json, atomic_write_text

    check_nested(splits)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for fraction in sorted(splits, reverse=True):
        name = split_filename(fraction)
        keys = splits[fraction]
        atomic_write_text(out_dir / name, "".join(k + "\n" for k in keys))
        files[repr(float(fraction))] = {"file": name, "count": len(keys)}
    path = out_dir / SPLIT_SUMMARY
    atomic_write_json(path, {**summary, "fractions": files})
    return path
