"""`facesift crawl`: search Flickr by keyword into the resumable SQLite catalog."""
from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path

from facesift.common.config import add_config_args

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "crawl", help="search Flickr by keyword into a resumable SQLite catalog",
        description="Search Flickr (or any Flickr-compatible endpoint) for each --query, split "
                    "upload-date windows past the 4,000-results cap, page them (re-reading a "
                    "window until its distinct photos reach its total), and catalogue "
                    "every allowed photo once. Re-running the same command resumes. Credentials: "
                    "FLICKR_API_KEY / FLICKR_API_SECRET or api_key/api_secret in --config.")
    p.add_argument("--query", action="append", dest="queries", metavar="KEYWORD",
                   help="search keyword (repeatable; default: faces)")
    p.add_argument("--tags", dest="search", action="store_const", const="tags",
                   help="match tags only (default: free text over title, description and tags)")
    p.add_argument("--licenses", help="comma-separated licence ids to keep (default 4,5,7,8,9,10)")
    p.add_argument("--min-date", help="earliest upload date, YYYY-MM-DD (default 2004-02-10)")
    p.add_argument("--max-date", help="latest upload date, inclusive (default: today)")
    p.add_argument("--limit", type=int, help="stop once N photos are catalogued for these queries")
    p.add_argument("--catalog", help="SQLite catalog (default work/catalog.sqlite)")
    p.add_argument("--api-url", help="Flickr-compatible REST endpoint (default $FACESIFT_FLICKR_API_URL, else Flickr)")
    p.add_argument("--rate", type=float, help="API calls per hour, all threads (default 3600)")
    p.add_argument("--threads", type=int, help="concurrent windows (default 4)")
    p.add_argument("--size", help="preferred image size suffix (default c = 800 px)")
    p.add_argument("--max-pixels", type=int, help="fallback: largest offered size under this many pixels")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesift.common.config import resolve, save_config
    from facesift.common.logsetup import register_secrets, summary
    from facesift.curate.crawl import CrawlConfig, crawl, summary_fields
    from facesift.curate.flickr import CredentialsError

    try:
        cfg = resolve(CrawlConfig, args.config, args.overrides, section="crawl",
                      queries=args.queries, search=args.search, licenses=args.licenses,
                      min_date=args.min_date, max_date=args.max_date, limit=args.limit,
                      catalog=args.catalog, api_url=args.api_url, rate=args.rate,
                      threads=args.threads, size=args.size, max_pixels=args.max_pixels)
    except (ValueError, OSError) as exc:
        log.error("bad configuration: %s", exc)
        return 2
    register_secrets([cfg.api_key, cfg.api_secret])
    log.info("config saved to %s", save_config(cfg, Path(f"{cfg.catalog}.config.yaml")))
    try:
        stats = crawl(cfg, progress=not args.no_progress)
    except sqlite3.DatabaseError as exc:
        log.error("catalog %s is not a usable SQLite catalog (%s); nothing was changed", cfg.catalog, exc)
        return 2
    except (CredentialsError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    fields = summary_fields(stats)
    summary("crawl", **fields, catalog=cfg.catalog)
    code = 0
    if fields["windows_failed"]:
        log.error("%d window(s) left unfinished after retries; re-run the same command to retry "
                  "them (see `facesift catalog stats`)", fields["windows_failed"])
        code = 1
    if fields["windows_incomplete"]:
        log.error("%d window(s) left unfinished: fewer distinct photos came back than their "
                  "total, even after re-reads (ranges above); re-run the same command to retry "
                  "them", fields["windows_incomplete"])
        code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    """`facesift crawl` without discovering every other subcommand (quick start-up for scripts):
    `python -m facesift.commands.crawl [-v] --query faces ...`."""
    import sys

    from facesift.common.logsetup import setup_logging
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="facesift")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["crawl", *(a for a in argv if a != "-v")])
    setup_logging(argv.count("-v"))
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
