"""`facesift catalog stats`: what the catalog holds, by status, licence, query and owner."""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("catalog", help="inspect a photo catalog")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    s = sub.add_parser("stats", help="counts by status, licence, query, source, failure reason and top owners")
    s.add_argument("--catalog", default="work/catalog.sqlite", help="catalog file")
    s.add_argument("--top", type=int, default=10, help="how many owners to list (default 10)")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument("--reasons", action="store_true",
                   help="list example photos (id and message) for each failure / skip reason")
    s.add_argument("--examples", type=int, default=3, help="examples per reason with --reasons (default 3)")
    s.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    from facesift.curate.catalog import Catalog
    from facesift.curate.catalog_stats import as_json, collect, report

    path = Path(args.catalog)
    if args.top < 0 or args.examples < 1:
        log.error("--top must be at least 0 and --examples at least 1")
        return 2
    if path.exists() and not path.is_file():
        log.error("%s is not a catalog file", path)
        return 2
    if not path.exists():
        log.error("no catalog at %s (run `facesift crawl --catalog %s` first)", path, path)
        return 2
    try:
        with Catalog(path) as catalog:
            stats = collect(catalog, args.examples if args.reasons else 0)
    except sqlite3.DatabaseError as exc:
        log.error("%s is not a usable SQLite catalog: %s", path, exc)
        return 2
    print(json.dumps(as_json(stats, args.top), indent=2, default=str) if args.json else report(stats, path, args.top))
    return 0
