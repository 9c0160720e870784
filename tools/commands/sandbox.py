"""`facesift sandbox`: run the local Flickr-compatible server in the foreground."""
from __future__ import annotations

import argparse
import logging

from facesift.common.config import add_config_args

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sandbox", help="run a local Flickr-compatible API + image server (tests, demo, dry runs)",
        description="Serve a seeded Flickr-like catalogue built from a folder of real photos, "
                    "on 127.0.0.1. Point the crawler at it with the printed "
                    "`export FACESIFT_FLICKR_API_URL=...` line; any API key and secret work.")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--photos", help="folder of images reused under many photo ids "
                                    "(default data/sample/photos)")
    p.add_argument("--count", type=int, default=300,
                   help="photos matching the keywords, spread over --query (default 300)")
    p.add_argument("--query", action="append", default=None,
                   help="keyword the photos match (repeatable; default: faces)")
    p.add_argument("--unrelated", type=int,
                   help="extra photos matching no keyword (default: a tenth of --count)")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--url-file", help="write the API URL to this file once listening")
    p.add_argument("--seed", type=int)
    p.add_argument("--min-date", help="earliest upload date (YYYY-MM-DD)")
    p.add_argument("--max-date", help="latest upload date (YYYY-MM-DD)")
    p.add_argument("--fault-rate", type=float, help="share of API calls that fail (codes "
                                                    "105/201, HTTP 500/503, slow, dropped)")
    p.add_argument("--bad-key", help="the API key that is refused with code 100")
    p.add_argument("--stable-ties", dest="stable_ties", action="store_const", const=True,
                   help="same-second uploads in a fixed order (default: an order that changes "
                        "per request, as on Flickr)")
    p.add_argument("--no-variants", dest="variants", action="store_const", const=False,
                   help="serve each source file's exact bytes instead of per-id variants")
    add_config_args(p)


def run(args: argparse.Namespace) -> int:
    from facesift.common.config import resolve
    from facesift.flickr_sandbox import SandboxConfig, serve_forever, split_count

    queries = split_count(args.count, args.query or ["faces"])
    try:
        cfg = resolve(SandboxConfig, args.config, args.overrides, section="sandbox",
                      photos=args.photos, queries=queries,
                      unrelated=args.count // 10 if args.unrelated is None else args.unrelated,
                      port=args.port, seed=args.seed, min_date=args.min_date,
                      max_date=args.max_date, fault_rate=args.fault_rate, bad_key=args.bad_key,
                      variants=args.variants, stable_ties=args.stable_ties)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    try:
        serve_forever(cfg, url_file=args.url_file)
    except (FileNotFoundError, ValueError) as exc:  # no images; a bad option (tie_sizes, fault kinds)
        log.error("%s", exc)
        return 2
    except OSError as exc:  # typically the port is taken
        log.error("cannot listen on %s:%s: %s", cfg.host, cfg.port or "(free port)", exc)
        return 2
    except KeyboardInterrupt:
        log.info("sandbox stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m facesift.commands.sandbox ...` without discovering every other subcommand."""
    from facesift.common.logsetup import setup_logging
    parser = argparse.ArgumentParser(prog="facesift sandbox")
    add_arguments(parser)
    setup_logging()
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
