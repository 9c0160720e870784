"""`facesift catalog stats`: what the catalog holds, by status, licence, query and owner."""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

LICENSE_NAMES = {0: "All Rights Reserved", 1: "CC BY-NC-SA", 2: "CC BY-NC", 3: "CC BY-NC-ND",
                 4: "CC BY", 5: "CC BY-SA", 6: "CC BY-ND", 7: "No known copyright restrictions",
                 8: "US Government Work", 9: "CC0", 10: "Public Domain Mark"}


def register(subparsers) -> None:
    p = subparsers.add_parser("catalog", help="inspect a photo catalog")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    s = sub.add_parser("stats", help="counts by status, licence, query, source and top owners")
    s.add_argument("--catalog", default="work/catalog.sqlite", help="catalog file")
    s.add_argument("--top", type=int, default=10, help="how many owners to list (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(func=run_stats)


def collect(catalog) -> dict:
    windows = catalog.windows()
    by_window: dict[str, int] = {}
    for w in windows:
        by_window[w["status"]] = by_window.get(w["status"], 0) + 1
    return {"photos": catalog.count(), "status": catalog.counts_by("status"),
            "license": catalog.counts_by("license"), "query": catalog.counts_by("query"),
            "source": catalog.counts_by("source"), "owners": catalog.counts_by("owner"),
            "windows": by_window,
            "failed_windows": [{k: w[k] for k in ("query", "min_date", "max_date", "error")}
                               for w in windows if w["status"] == "failed"]}


def _table(title: str, counts: dict, total: int, names: dict | None = None) -> list[str]:
    lines = [f"{title}:"]
    for key, n in counts.items():
        label = str(key) if key is not None else "-"
        if names and key in names:
            label = f"{key} {names[key]}"
        share = f"{100 * n / total:5.1f}%" if total else ""
        lines.append(f"  {label:<40} {n:>9}  {share}")
    return lines


def run_stats(args: argparse.Namespace) -> int:
    from facesift.curate.catalog import Catalog

    path = Path(args.catalog)
    if not path.exists():
        log.error("no catalog at %s (run `facesift crawl --catalog %s` first)", path, path)
        return 2
    try:
        with Catalog(path) as catalog:
            stats = collect(catalog)
    except sqlite3.DatabaseError as exc:
        log.error("%s is not a usable SQLite catalog: %s", path, exc)
        return 2
    owners = dict(list(stats["owners"].items())[: args.top])
    if args.json:
        print(json.dumps({**stats, "owners": owners, "n_owners": len(stats["owners"])},
                         indent=2, default=str))
        return 0
    total = stats["photos"]
    lines = [f"catalog {path}: {total} photos, {len(stats['owners'])} owners"]
    lines += _table("by status", stats["status"], total)
    lines += _table("by licence", stats["license"], total, LICENSE_NAMES)
    lines += _table("by query", stats["query"], total)
    if set(stats["source"]) - {"flickr"}:
        lines += _table("by source", stats["source"], total)
    lines += _table(f"top {len(owners)} owners", owners, total)
    if stats["windows"]:
        lines.append("crawl windows: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["windows"].items())))
    for w in stats["failed_windows"]:
        lines.append(f"  unfinished: {w['query']!r} {w['min_date']}..{w['max_date']}: {w['error']}")
    print("\n".join(lines))
    return 0
