"""`facesift curve`: the table, plot and redundancy index of a fine-tuning grid's results."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("facesift.curve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("curve", help="table, plot and redundancy index of `facesift finetune` results",
                       description="Reads results/*.json, prints rows init x fraction with mean ± std over "
                                   "seeds, the redundancy index per init, and saves curve.png + curve.json.")
    p.add_argument("results", type=Path, help="a results/ folder (or the grid's output folder)")
    p.add_argument("--metric", help="metric for the curve and index (default: the task's headline metric)")
    p.add_argument("--tolerance", type=float, default=0.05, help="relative band around the full-data metric")
    p.add_argument("--plot", type=Path, help="PNG path (default <results>/../curve.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesift.finetune.curve import format_table, load_results, plot, summarise
    from facesift.common.atomic import atomic_write_json
    from facesift.common.logsetup import summary

    skipped: list[str] = []
    superseded: list[str] = []
    try:
        results = load_results(args.results, skipped, superseded)
        blocks = summarise(results, args.metric, args.tolerance)
    except (FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    print(format_table(blocks))
    base = args.results if args.results.is_dir() else args.results.parent
    base = base.parent if base.name == "results" else base
    png = plot(blocks, args.plot or base / "curve.png")
    atomic_write_json(base / "curve.json", [{k: v for k, v in b.items()} for b in blocks])
    summary("curve", results=len(results), skipped=len(skipped), superseded=len(superseded), groups=len(blocks),
            plot=str(png))
    return 1 if skipped else 0
