"""`facesift study redundancy|selection|pose`: experiments over the whole chain (docs/studies.md)."""
from __future__ import annotations

import argparse
import logging
import signal
import subprocess
from pathlib import Path

from facesift.common.config import add_config_args

log = logging.getLogger("facesift.study")


STUDIES = {
    "redundancy": ("equal-size sets at 0/50/80 %% injected near-duplicates: redundancy's measures vs "
                   "SwAV + few-shot NME",
                   "Builds pretraining sets of one size with increasing injected near-duplicates, measures "
                   "each with `facesift redundancy` and with SwAV + landmark fine-tuning on held-out faces, "
                   "and reports both with their Spearman rank agreement."),
    "selection": ("which 2 %% / 10 %% to label: random, random after de-duplication, cluster-balanced, "
                  "cluster-typical",
                  "Chooses the labelled faces four ways, each as many as the random subset of the seed, "
                  "fine-tunes one recipe from one init on each and compares them on held-out faces."),
    "pose": ("pose-balanced vs uniform SwAV pretraining, NME on frontal and turned held-out faces",
             "Pretrains SwAV on one set with and without `data.pose_balance`, fine-tunes both at 2 %% of "
             "the labels and reports NME on all, frontal and turned held-out faces."),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="experiments over the whole chain (redundancy, selection, pose)",
                       description="Controlled experiments that run pretrain, finetune and redundancy "
                                   "together; see docs/studies.md.")
    kinds = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, (short, long) in STUDIES.items():
        r = kinds.add_parser(name, help=short, description=long + " Resumable: re-run the same command.")
        r.add_argument("--work", type=Path, default=Path("work") / f"study-{name}", help="work/output folder")
        r.add_argument("--data", help="labelled pool (landmarks5 layout; default ../shared/data/landmarks5)")
        r.add_argument("--test", help="held-out '<img> x1..x5 y1..y5' list (default: the --holdout folder of --data)")
        add_config_args(r)
        r.set_defaults(func=run_study_command)


def _load(name: str):
    """(config class, run, format_table) of one study."""
    if name == "redundancy":
        from facesift import study_redundancy as m
        return m.StudyConfig, m.run_study, m.format_table
    if name == "selection":
        from facesift import study_selection as m
        return m.SelectionConfig, m.run_selection, m.format_table
    from facesift import study_pose as m
    return m.PoseConfig, m.run_pose, m.format_table


def check(name: str, cfg) -> None:
    """Bad values exit 2 before any work starts."""
    if name == "redundancy" and sorted(set(cfg.rates)) != list(cfg.rates):
        raise ValueError(f"rates must be distinct and increasing, got {cfg.rates}")
    if hasattr(cfg, "check"):
        cfg.check()
    for path in (cfg.data, cfg.test, getattr(cfg, "pretrain_config", ""), cfg.finetune_config,
                 getattr(cfg, "from_study", "")):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{path}: not found")


def run_study_command(args: argparse.Namespace) -> int:
    from facesift.common.config import resolve
    from facesift.common.lock import LockHeld, output_lock
    from facesift.experiment import exit_on_sigterm

    config_class, run, format_table = _load(args.study)
    try:
        cfg = resolve(config_class, args.config, args.overrides, section="study", data=args.data, test=args.test)
        check(args.study, cfg)
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    previous = signal.getsignal(signal.SIGTERM)
    exit_on_sigterm()
    try:
        with output_lock(args.work):
            result = run(cfg, args.work.resolve())
    except (ValueError, FileNotFoundError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2
    except (RuntimeError, subprocess.CalledProcessError) as exc:   # a stage failed: its log says why
        log.error("%s", exc)
        return 1
    finally:   # called in-process (tests, scripts): the handler does not outlive the command
        signal.signal(signal.SIGTERM, previous)
    print(format_table(result))
    plot = " plot " + str(args.work / "study.png") + "," if (args.work / "study.png").exists() else ""
    print(f"table {args.work / 'study.txt'},{plot} json {args.work / 'study.json'}")
    return 0
