"""`facesift shards {info,verify,split,sample,merge-index}`: look at, check, split and join shard sets.

Every subcommand takes any shard spec (a shard directory, an index.json, a brace pattern, a
`pipe:`/http URL or a comma list) through `shards.index.shard_urls`. Exit status: 0 fine, 1 a
damaged shard was met (named, counted, used up to its damage; see docs/shards.md) or verify /
merge-index found a problem, 2 bad input or options (nothing read or written).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from facesift.common.config import add_config_args, check_range, resolve
from facesift.common.logsetup import summary
from facesift.shards import config as c
from facesift.shards.damaged import DamageTally

log = logging.getLogger("facesift.shards")
# bad input: no such shards, a malformed index or option, an --out that cannot be written
BAD_INPUT = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, PermissionError)


def _info(args: argparse.Namespace) -> int:
    from facesift.shards.info import collect_info, format_info
    cfg = resolve(c.InfoConfig, args.config, args.overrides, section="info", workers=args.workers)
    tally = DamageTally()
    info = collect_info(args.shards, workers=c.resolve_workers(cfg.workers), progress=not args.json, tally=tally)
    print(json.dumps(info, indent=2) if args.json else format_info(info, top=cfg.top))
    if not args.json:
        summary("shards info", shards=info["shards"], samples=info["samples"], bytes=info["bytes"],
                damaged_shards=len(tally))
    return tally.exit_code()


def _verify(args: argparse.Namespace) -> int:
    from facesift.common.atomic import atomic_write_json
    from facesift.shards.verify import verify
    cfg = resolve(c.VerifyConfig, args.config, args.overrides, section="verify", workers=args.workers,
                  decode=False if args.no_decode else None)
    report = verify(args.shards, workers=c.resolve_workers(cfg.workers), decode=cfg.decode, progress=not args.json)
    for warning in report.warnings:
        log.warning("%s", warning)
    if args.report:
        atomic_write_json(args.report, report.as_dict())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        if report.problems:
            print(report.format_problems(cfg.max_print, args.report))
        summary("shards verify", ok=report.ok, shards=len(report.shards), samples=report.nsamples,
                problems=len(report.problems), bad_shards=len({p.shard for p in report.problems}))
    return 0 if report.ok else 1


def _split(args: argparse.Namespace) -> int:
    from facesift.analysis.selection import SELECTION_METHODS
    from facesift.shards.split import split_shards
    cfg = resolve(c.SplitConfig, args.config, args.overrides, section="split", fractions=args.fractions,
                  seed=args.seed, method=args.method, exclude=args.exclude, clusters=args.clusters)
    tally = DamageTally()
    done = split_shards(args.shards, args.out, cfg, methods=SELECTION_METHODS,
                        tally=tally)
    summary("shards split", keys=done["keys"], excluded=done["excluded"],
            **{f"n{f!r}": n for f, n in done["counts"].items()}, damaged_shards=len(tally), out=str(args.out))
    return tally.exit_code()


def _sample(args: argparse.Namespace) -> int:
    from facesift.shards.contact_sheet import contact_sheet
    check_range(args.n, 1, c.MAX_SHEET, "n (crops on the sheet)")
    cfg = resolve(c.SampleConfig, args.config, args.overrides, section="sample", seed=args.seed,
                  cell=args.cell, cols=args.cols, captions=False if args.no_captions else None)
    tally = DamageTally()
    try:
        keys = contact_sheet(args.shards, args.n, args.out, seed=cfg.seed, cell=cfg.cell, cols=cfg.cols,
                             captions=cfg.captions, tally=tally)
    except ValueError as exc:
        if not tally:
            raise
        log.error("shards sample: %s", exc)  # nothing to draw because the shards are damaged
        keys = []
    summary("shards sample", shown=len(keys), damaged_shards=len(tally), out=str(args.out))
    return tally.exit_code()


def _merge(args: argparse.Namespace) -> int:
    from facesift.shards.index import BadIndex
    from facesift.shards.merge import merge_parts
    try:
        paths, out, merged = merge_parts(args.parts, args.out, args.glob, name=args.name,
                                         check_files=not args.no_check_files, allow_partial=args.allow_partial)
    except (FileNotFoundError, BadIndex):
        raise  # no such part index, or one that is not an index: bad input (exit 2)
    except ValueError as exc:  # parts that conflict: exit 1, like a failed verify
        log.error("%s", exc)
        return 1
    summary("shards merge-index", parts=len(paths), shards=len(merged["shardlist"]),
            samples=sum(int(e.get("nsamples") or 0) for e in merged["shardlist"]), out=str(out))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Bad input (no such shards, a malformed index or option) is one clear line and exit 2."""
    try:
        return args.shards_run(args)
    except BAD_INPUT as exc:
        log.error("shards %s: %s", args.shards_command, exc)
        return 2


# (name, help, handler, [(flag, add_argument keywords)]) of each subcommand
SPEC = dict(nargs="?", default="work/shards",
            help="shard dir, index.json, brace pattern, pipe:/http URL or comma list (default work/shards)")
WORKERS = dict(type=int, help="parallel shard readers (default: CPUs, max 8)")
OUT_DIR = dict(type=Path, required=True)
SUBCOMMANDS = [
    ("info", "counts, sizes and licence/source/query/detector breakdowns", _info, [
        ("shards", SPEC), ("--json", dict(action="store_true", help="print JSON instead of the table")),
        ("--workers", WORKERS)]),
    ("verify", "decode every sample, check sha256/nsamples against the index, find duplicate keys; exit 1 on "
               "any problem", _verify, [
        ("shards", SPEC), ("--workers", dict(WORKERS, help="parallel shard checkers (default: CPUs, max 8)")),
        ("--no-decode", dict(action="store_true", help="skip image decoding (checksums and structure only)")),
        ("--report", dict(type=Path, help="write every problem to this JSON file")),
        ("--json", dict(action="store_true", help="print the report as JSON"))]),
    ("split", "nested deterministic key lists (e.g. 100/10/2%%) by key hash", _split, [
        ("shards", SPEC), ("--fractions", dict(help="comma list in (0, 1], e.g. 1.0,0.1,0.02 (the default)")),
        ("--seed", dict(type=int, help="hash seed (default 0)")),
        ("--method", dict(help="selection method: random (default), cluster-balanced (round-robin over "
                                "the clusters) or cluster-typical (the same, nearest the centroid first)")),
        ("--exclude", dict(help="file of keys (one a line) to drop before splitting, e.g. duplicates")),
        ("--clusters", dict(help="for the cluster methods: clusters.tsv or a `facesift redundancy` "
                                 "output dir")),
        ("--out", dict(OUT_DIR, help="directory for split-<f>.txt and split.json"))]),
    ("sample", "contact sheet PNG of N random crops", _sample, [
        ("n", dict(type=int, help=f"number of crops (1 to {c.MAX_SHEET})")), ("shards", SPEC),
        ("--out", dict(OUT_DIR, help="PNG to write")), ("--seed", dict(type=int, help="sampling seed (default 0)")),
        ("--cell", dict(type=int, help="pixels per crop (default 128)")),
        ("--cols", dict(type=int, help="grid columns (default: square)")),
        ("--no-captions", dict(action="store_true", help="no keys under the crops"))]),
    ("merge-index", "combine per-part indexes (curate --part K/N) into one index.json", _merge, [
        ("parts", dict(nargs="+", help="a directory (its index-*.json are merged) or part index files")),
        ("--out", dict(type=Path, help="merged index path (default: index.json beside the parts)")),
        ("--glob", dict(default="index-*.json", help="part index pattern inside a directory")),
        ("--name", dict(help="dataset name for the merged index (default: the parts' name)")),
        ("--no-check-files", dict(action="store_true", help="do not require listed local shards to exist")),
        ("--allow-partial", dict(action="store_true", help="merge even if some index-pKofN.json are missing"))]),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("shards", help="inspect, verify, split, sample and merge shard sets",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True)
    for name, help_text, handler, arguments in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text)
        for flag, options in arguments:
            p.add_argument(flag, **options)
        if name != "merge-index":
            add_config_args(p)
        p.set_defaults(func=_run, shards_run=handler)
