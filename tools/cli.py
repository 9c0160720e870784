"""`facesift`: one console script, a subcommand per stage (see tools/commands/)."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import facesift.commands
from facesift.common.logsetup import setup_logging

log = logging.getLogger("facesift")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facesift",
        description="Build face datasets from the open web and learn face representations on them.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (DEBUG)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less logging (WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(facesift.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"facesift.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted; re-run the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
