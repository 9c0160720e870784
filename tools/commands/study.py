"""`facesift study redundancy`: the cheap redundancy measure against the expensive curve (docs/studies.md)."""
from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from facesift.common.config import add_config_args

log = logging.getLogger("facesift.study")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="experiments over the whole chain (redundancy)",
                       description="Controlled experiments that run pretrain, finetune and redundancy "
                                   "together; see docs/studies.md.")
    kinds = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    r = kinds.add_parser("redundancy", help="equal-size sets at 0/50/80 %% injected near-duplicates: "
                                            "redundancy's measures vs SwAV + few-shot NME",
                         description="Builds pretraining sets of one size with increasing injected "
                                     "near-duplicates, measures each with `facesift redundancy` and with "
                                     "SwAV + landmark fine-tuning on held-out faces, and reports both with "
                                     "their Spearman rank agreement. Resumable: re-run the same command.")
    r.add_argument("--work", type=Path, default=Path("work") / "study-redundancy", help="work/output folder")
    r.add_argument("--data", help="labelled pool (landmarks5 layout; default ../shared/data/landmarks5)")
    r.add_argument("--test", help="held-out '<img> x1..x5 y1..y5' list (default: the --holdout folder of --data)")
    add_config_args(r)
    r.set_defaults(func=run_redundancy)


def run_redundancy(args: argparse.Namespace) -> int:
    from facesift.common.config import resolve
    from facesift.common.lock import LockHeld, output_lock
    from facesift.experiment import exit_on_sigterm
    from facesift.study_redundancy import StudyConfig, format_table, run_study

    try:
        cfg = resolve(StudyConfig, args.config, args.overrides, section="study", data=args.data, test=args.test)
        if sorted(set(cfg.rates)) != list(cfg.rates):
            raise ValueError(f"rates must be distinct and increasing, got {cfg.rates}")
        for path in (cfg.data, cfg.test, cfg.pretrain_config, cfg.finetune_config):
            if path and not Path(path).exists():
                raise FileNotFoundError(f"{path}: not found")
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    exit_on_sigterm()
    try:
        with output_lock(args.work):
            result = run_study(cfg, args.work.resolve())
    except (ValueError, FileNotFoundError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2
    except (RuntimeError, subprocess.CalledProcessError) as exc:   # a stage failed: its log says why
        log.error("%s", exc)
        return 1
    print(format_table(result))
    print(f"table {args.work / 'study.txt'}, plot {args.work / 'study.png'}, json {args.work / 'study.json'}")
    return 0
