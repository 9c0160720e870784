"""Options of `facesift shards {info,verify,split,sample}`: dataclasses with working defaults.

Each is one section of a pipeline YAML (``info:``, ``verify:``, ``split:``, ``sample:``) and
takes `--set key=value` overrides (facesift.common.config).
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class InfoConfig:
    workers: int = 0          # parallel shard readers; 0 = one per CPU (at most 8)
    top: int = 10             # rows per breakdown in the text table


@dataclass
class VerifyConfig:
    workers: int = 0          # parallel shard checkers; 0 = one per CPU (at most 8)
    decode: bool = True       # decode every image (False: structure, json and checksums only)
    max_print: int = 50       # problems listed on stdout; --report FILE gets them all


@dataclass
class SplitConfig:
    fractions: tuple[float, ...] = (1.0, 0.1, 0.02)
    seed: int = 0
    method: str = "random"    # selection method: shards.split.SPLIT_METHODS, or one the caller passes in
    exclude: str | None = None  # file of keys (one a line) dropped before splitting
    clusters: str | None = None  # cluster-balanced: clusters.tsv or a `facesift redundancy` output dir


@dataclass
class SampleConfig:
    seed: int = 0
    cell: int = 128           # pixels per crop in the grid
    cols: int = 0             # 0 = square-ish grid
    captions: bool = True     # print each sample's key under its crop


def resolve_workers(n: int) -> int:
    """A config's `workers`: 0 means one per CPU, at most 8."""
    return n if n > 0 else min(8, os.cpu_count() or 1)
