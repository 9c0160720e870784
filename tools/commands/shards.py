"""`facesift shards {info,verify,split,sample,merge-index}`: look at, check, split and join shard sets.

Every subcommand takes any shard spec (a shard directory, an index.json, a brace pattern, a
`pipe:`/http URL or a comma list) through `shards.index.shard_urls`.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facesift.common.config import add_config_args, resolve, to_dict
from facesift.common.logsetup import summary

log = logging.getLogger("facesift.shards")
DEFAULT_SHARDS = "work/shards"


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
    method: str = "random"    # selection method, see SPLIT_METHODS
    exclude: str | None = None  # file of keys (one a line) dropped before splitting
    clusters: str | None = None  # cluster-balanced: clusters.tsv or a `facesift redundancy` output dir


@dataclass
class SampleConfig:
    seed: int = 0
    cell: int = 128           # pixels per crop in the grid
    cols: int = 0             # 0 = square-ish grid
    captions: bool = True     # print each sample's key under its crop


def _clean_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Bad input (no such shards, a malformed index or option) is one clear line and exit 2."""
    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (FileNotFoundError, NotADirectoryError, ValueError, json.JSONDecodeError) as exc:
            log.error("shards %s: %s", args.shards_command, exc)
            return 2
    return wrapper


def _workers(n: int) -> int:
    return n if n > 0 else min(8, os.cpu_count() or 1)


def _spec(args: argparse.Namespace) -> str:
    return args.shards


# ---- info ----

@_clean_errors
def run_info(args: argparse.Namespace) -> int:
    from facesift.shards.info import collect_info, format_info

    cfg = resolve(InfoConfig, args.config, args.overrides, section="info", workers=args.workers)
    info = collect_info(_spec(args), workers=_workers(cfg.workers), progress=not args.json)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_info(info, top=cfg.top))
        summary("shards info", shards=info["shards"], samples=info["samples"], bytes=info["bytes"])
    return 0


# ---- verify ----

@_clean_errors
def run_verify(args: argparse.Namespace) -> int:
    from facesift.shards.verify import verify

    cfg = resolve(VerifyConfig, args.config, args.overrides, section="verify", workers=args.workers,
                  decode=False if args.no_decode else None)
    report = verify(_spec(args), workers=_workers(cfg.workers), decode=cfg.decode, progress=not args.json)
    for warning in report.warnings:
        log.warning("%s", warning)
    records = [{"shard": p.shard, "key": p.key, "problem": p.what} for p in report.problems]
    if args.report:
        from facesift.common.atomic import atomic_write_json
        atomic_write_json(args.report, {"ok": report.ok, "shards": len(report.shards),
                                        "samples": report.nsamples, "problems": records,
                                        "warnings": report.warnings})
    if args.json:
        json.dump({"ok": report.ok, "shards": len(report.shards), "samples": report.nsamples,
                   "problems": records, "warnings": report.warnings}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if report.problems:
            print(f"{len(report.problems)} problem(s):")
            for problem in report.problems[:cfg.max_print]:
                print(f"  {problem}")
            if len(report.problems) > cfg.max_print:
                more = len(report.problems) - cfg.max_print
                print(f"  ... and {more} more" + (f" (all in {args.report})" if args.report else
                                                  " (--report FILE lists all)"))
        bad_shards = len({p.shard for p in report.problems})
        summary("shards verify", ok=report.ok, shards=len(report.shards), samples=report.nsamples,
                problems=len(report.problems), bad_shards=bad_shards)
    return 0 if report.ok else 1


# ---- split ----

def _random_method(keys: list[str], fractions: list[float], cfg: SplitConfig,
                   args: argparse.Namespace) -> dict[float, list[str]]:
    from facesift.shards.split import random_splits
    return random_splits(keys, fractions, cfg.seed)


# name -> fn(keys in index order, fractions largest first, config, args) -> {fraction: keys}.
# Other methods (e.g. analysis' cluster-balanced selection) register here; write_splits checks
# that whatever they return is nested.
SPLIT_METHODS: dict[str, Callable[..., dict[float, list[str]]]] = {"random": _random_method}


def _cluster_balanced_method(keys: list[str], fractions: list[float], cfg: SplitConfig,
                             args: argparse.Namespace) -> dict[float, list[str]]:
    """Round-robin over `facesift redundancy` k-means clusters (analysis/selection.py)."""
    from facesift.analysis.selection import cluster_balanced_splits, read_clusters
    if not cfg.clusters:
        raise ValueError("--method cluster-balanced needs --clusters (clusters.tsv or a `facesift redundancy` "
                         "output directory)")
    return cluster_balanced_splits(keys, fractions, read_clusters(cfg.clusters), cfg.seed)


SPLIT_METHODS["cluster-balanced"] = _cluster_balanced_method


def collect_keys(spec: str, progress: bool = True) -> list[str]:
    """All keys in index order, reading tar headers only; a repeated key is kept once (verify names it)."""
    from tqdm import tqdm

    from facesift.shards.index import shard_urls
    from facesift.shards.reader import iter_keys

    keys: list[str] = []
    seen: set[str] = set()
    repeats = 0
    for url in tqdm(shard_urls(spec), unit="shard", desc="keys", disable=not progress):
        for key in iter_keys(url):
            if key in seen:
                repeats += 1
                continue
            seen.add(key)
            keys.append(key)
    if repeats:
        log.warning("%d repeated key(s) kept once; run `facesift shards verify` to find them", repeats)
    return keys


@_clean_errors
def run_split(args: argparse.Namespace) -> int:
    from facesift.shards.split import parse_fractions, read_key_list, write_splits

    cfg = resolve(SplitConfig, args.config, args.overrides, section="split", fractions=args.fractions,
                  seed=args.seed, method=args.method, exclude=args.exclude,
                  clusters=getattr(args, "clusters", None))
    fractions = parse_fractions(cfg.fractions)
    if cfg.method not in SPLIT_METHODS:
        log.error("unknown split method %r; known: %s", cfg.method, ", ".join(sorted(SPLIT_METHODS)))
        return 2
    keys = collect_keys(_spec(args))
    excluded = 0
    if cfg.exclude:
        drop = set(read_key_list(cfg.exclude))
        before = len(keys)
        keys = [k for k in keys if k not in drop]
        excluded = before - len(keys)
        if excluded < len(drop):
            log.info("%d key(s) of %s are not in the shards", len(drop) - excluded, cfg.exclude)
    try:
        splits = SPLIT_METHODS[cfg.method](keys, fractions, cfg, args)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    path = write_splits(args.out, splits, source=str(_spec(args)), total=len(keys), excluded=excluded,
                        config=to_dict(cfg))
    log.info("wrote %s", path)
    counts = {f"n{f!r}": len(splits[f]) for f in fractions}
    summary("shards split", keys=len(keys), excluded=excluded, **counts, out=str(args.out))
    return 0


# ---- sample ----

@_clean_errors
def run_sample(args: argparse.Namespace) -> int:
    from facesift.shards.contact_sheet import contact_sheet

    cfg = resolve(SampleConfig, args.config, args.overrides, section="sample", seed=args.seed,
                  cell=args.cell, cols=args.cols, captions=False if args.no_captions else None)
    keys = contact_sheet(_spec(args), args.n, args.out, seed=cfg.seed, cell=cfg.cell, cols=cfg.cols,
                         captions=cfg.captions)
    summary("shards sample", shown=len(keys), out=str(args.out))
    return 0


# ---- merge-index ----

@_clean_errors
def run_merge(args: argparse.Namespace) -> int:
    from facesift.shards.merge import find_part_indexes, merge_indexes

    paths: list[Path] = []
    for item in args.parts:
        item = Path(item)
        paths.extend(find_part_indexes(item, args.glob) if item.is_dir() else [item])
    out = args.out or (paths[0].parent / "index.json" if len(args.parts) > 1 or not Path(args.parts[0]).is_dir()
                       else Path(args.parts[0]) / "index.json")
    try:
        merged = merge_indexes(paths, out, name=args.name, check_files=not args.no_check_files,
                               allow_partial=args.allow_partial)
    except ValueError as exc:
        log.error("%s", exc)
        return 1
    nsamples = sum(int(e.get("nsamples") or 0) for e in merged["shardlist"])
    summary("shards merge-index", parts=len(paths), shards=len(merged["shardlist"]), samples=nsamples,
            out=str(out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="inspect, verify, split, sample and merge shard sets",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True)
    spec_help = f"shard dir, index.json, brace pattern, pipe:/http URL or comma list (default {DEFAULT_SHARDS})"

    p = sub.add_parser("info", help="counts, sizes and licence/source/query/detector breakdowns")
    p.add_argument("shards", nargs="?", default=DEFAULT_SHARDS, help=spec_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--workers", type=int, help="parallel shard readers (default: CPUs, max 8)")
    add_config_args(p)
    p.set_defaults(func=run_info)

    p = sub.add_parser("verify", help="decode every sample, check sha256/nsamples against the index, "
                                      "find duplicate keys; exit 1 on any problem")
    p.add_argument("shards", nargs="?", default=DEFAULT_SHARDS, help=spec_help)
    p.add_argument("--workers", type=int, help="parallel shard checkers (default: CPUs, max 8)")
    p.add_argument("--no-decode", action="store_true", help="skip image decoding (checksums and structure only)")
    p.add_argument("--report", type=Path, help="write every problem to this JSON file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_args(p)
    p.set_defaults(func=run_verify)

    p = sub.add_parser("split", help="nested deterministic key lists (e.g. 100/10/2%%) by key hash")
    p.add_argument("shards", nargs="?", default=DEFAULT_SHARDS, help=spec_help)
    p.add_argument("--fractions", help="comma list in (0, 1], e.g. 1.0,0.1,0.02 (the default)")
    p.add_argument("--seed", type=int, help="hash seed (default 0)")
    p.add_argument("--method", help=f"selection method: {', '.join(SPLIT_METHODS)} (default random)")
    p.add_argument("--exclude", help="file of keys (one a line) to drop before splitting, e.g. duplicates")
    p.add_argument("--clusters", help="for --method cluster-balanced: clusters.tsv or a `facesift redundancy` "
                                      "output dir")
    p.add_argument("--out", type=Path, required=True, help="directory for split-<f>.txt and split.json")
    add_config_args(p)
    p.set_defaults(func=run_split)

    p = sub.add_parser("sample", help="contact sheet PNG of N random crops")
    p.add_argument("n", type=int, help="number of crops")
    p.add_argument("shards", nargs="?", default=DEFAULT_SHARDS, help=spec_help)
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--seed", type=int, help="sampling seed (default 0)")
    p.add_argument("--cell", type=int, help="pixels per crop (default 128)")
    p.add_argument("--cols", type=int, help="grid columns (default: square)")
    p.add_argument("--no-captions", action="store_true", help="no keys under the crops")
    add_config_args(p)
    p.set_defaults(func=run_sample)

    p = sub.add_parser("merge-index", help="combine per-part indexes (curate --part K/N) into one index.json")
    p.add_argument("parts", nargs="+", help="a directory (its index-*.json are merged) or part index files")
    p.add_argument("--out", type=Path, help="merged index path (default: index.json beside the parts)")
    p.add_argument("--glob", default="index-*.json", help="part index pattern inside a directory")
    p.add_argument("--name", help="dataset name for the merged index (default: the parts' name)")
    p.add_argument("--no-check-files", action="store_true", help="do not require listed local shards to exist")
    p.add_argument("--allow-partial", action="store_true", help="merge even if some index-pKofN.json are missing")
    p.set_defaults(func=run_merge)
