"""Options of `facesift shards {info,verify,split,sample}`: dataclasses with working defaults.

Each is one section of a pipeline YAML (``info:``, ``verify:``, ``split:``, ``sample:``) and
takes `--set key=value` overrides (facesift.common.config). Every number is range-checked when
the config is resolved (`bounded`), so a bad value exits 2 before a shard is read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from facesift.common.config import bounded, bounded_list

MAX_WORKERS = 256
SEED_MAX = 2**32 - 1
MAX_SHEET = 10_000  # crops on one contact sheet: beyond this the PNG is too large to look at


@dataclass
class InfoConfig:
    workers: int = bounded(0, 0, MAX_WORKERS)  # parallel shard readers; 0 = one per CPU (at most 8)
    top: int = bounded(10, 1)  # rows per breakdown in the text table


@dataclass
class VerifyConfig:
    workers: int = bounded(0, 0, MAX_WORKERS)  # parallel shard checkers; 0 = one per CPU (at most 8)
    decode: bool = True       # decode every image (False: structure, json and checksums only)
    max_print: int = bounded(50, 0)  # problems listed on stdout; --report FILE gets them all


@dataclass
class SplitConfig:
    fractions: tuple[float, ...] = bounded_list([1.0, 0.1, 0.02], 1e-12, 1.0)  # each in (0, 1]
    seed: int = bounded(0, 0, SEED_MAX)
    method: str = "random"    # selection method: shards.split.SPLIT_METHODS, or one the caller passes in
    exclude: str | None = None  # file of keys (one a line) dropped before splitting
    clusters: str | None = None  # cluster-balanced: clusters.tsv or a `facesift redundancy` output dir


@dataclass
class SampleConfig:
    seed: int = bounded(0, 0, SEED_MAX)
    cell: int = bounded(128, 8, 2048)  # pixels per crop in the grid
    cols: int = bounded(0, 0, MAX_SHEET)  # 0 = square-ish grid
    captions: bool = True     # print each sample's key under its crop


def resolve_workers(n: int) -> int:
    """A config's `workers`: 0 means one per CPU, at most 8."""
    return n if n > 0 else min(8, os.cpu_count() or 1)
