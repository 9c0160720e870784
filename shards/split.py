"""Deterministic, nested data fractions decided by hashing (seed, key).

A sample's membership depends only on its key and the seed — never on file order, shard
layout or how many other samples exist — so 2% ⊂ 10% ⊂ 100% holds by construction and the
same split can be recomputed anywhere (curate, pretrain, finetune) without shipping lists.
`facesift shards split` still writes the lists (`split-<f>.txt`, index order, + `split.json`):
they are what other tools and people read, and what non-hash selection methods produce.

Selection methods are functions (keys in index order, fractions largest first, SplitConfig) ->
{fraction: keys}. `random` (by key hash) lives here; others come from stages above this one
(analysis' `cluster-balanced`) and are passed in by the caller, so shards imports none of them.
Whatever a method returns, `write_splits` checks that it is nested.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from facesift.shards.config import SplitConfig
from facesift.shards.damaged import DamageTally

log = logging.getLogger(__name__)

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


# ---- `facesift shards split` end to end ----

SplitMethod = Callable[[list[str], list[float], SplitConfig], dict[float, list[str]]]


def random_method(keys: list[str], fractions: list[float], cfg: SplitConfig) -> dict[float, list[str]]:
    return random_splits(keys, fractions, cfg.seed)


SPLIT_METHODS: dict[str, SplitMethod] = {"random": random_method}


def collect_keys(spec: Any, progress: bool = True, tally: DamageTally | None = None) -> list[str]:
    """All keys in index order, reading tar headers only; a repeated key is kept once (verify names it).

    A damaged shard gives the keys of its complete samples before the damage (the samples `shards
    info` counts) and goes to `tally` (one warning line each)."""
    from facesift.common.progress import progress as bar
    from facesift.shards.index import shard_urls
    from facesift.shards.reader import DamagedShard, iter_keys

    tally = tally if tally is not None else DamageTally()
    keys: list[str] = []
    seen: set[str] = set()
    repeats = 0
    for url in bar(shard_urls(spec), unit="shard", desc="keys", disable=not progress):
        try:
            for key in iter_keys(url):
                if key in seen:
                    repeats += 1
                    continue
                seen.add(key)
                keys.append(key)
        except DamagedShard as exc:
            tally.add(exc)
    if repeats:
        log.warning("%d repeated key(s) kept once; run `facesift shards verify` to find them", repeats)
    return keys


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse an `--out` that exists and is not a directory, before any shard is read."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a directory: choose another --out")


def split_shards(spec: Any, out_dir: str | Path, cfg: SplitConfig,
                 methods: Mapping[str, SplitMethod] | None = None, progress: bool = True,
                 tally: DamageTally | None = None) -> dict[str, Any]:
    """Keys of `spec` minus `cfg.exclude`, split by `cfg.method` (one of SPLIT_METHODS or of
    `methods`), written to `out_dir`. Raises ValueError / FileNotFoundError on bad input; damaged
    shards are split as far as they read (`collect_keys`), listed in split.json and in `tally`."""
    from facesift.common.config import to_dict

    known = {**SPLIT_METHODS, **(methods or {})}
    if cfg.method not in known:
        raise ValueError(f"unknown split method {cfg.method!r}; known: {', '.join(sorted(known))}")
    fractions = parse_fractions(cfg.fractions)
    check_out_dir(out_dir)
    if cfg.exclude and not Path(cfg.exclude).is_file():
        raise FileNotFoundError(f"--exclude {cfg.exclude}: no such file")
    tally = tally if tally is not None else DamageTally()
    keys = collect_keys(spec, progress, tally)
    excluded = 0
    if cfg.exclude:
        drop = set(read_key_list(cfg.exclude))
        before = len(keys)
        keys = [k for k in keys if k not in drop]
        excluded = before - len(keys)
        if excluded < len(drop):
            log.info("%d key(s) of %s are not in the shards", len(drop) - excluded, cfg.exclude)
    splits = known[cfg.method](keys, fractions, cfg)
    path = write_splits(out_dir, splits, source=str(spec), total=len(keys), excluded=excluded,
                        damaged_shards=tally.as_json(), config=to_dict(cfg))
    log.info("wrote %s", path)
    return {"keys": len(keys), "excluded": excluded, "counts": {f: len(splits[f]) for f in fractions},
            "path": path, "damaged_shards": len(tally)}
