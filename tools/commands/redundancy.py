"""`facesift redundancy`: near-duplicates, groups, keep lists, redundancy measures and report.html."""
from __future__ import annotations

import logging
from pathlib import Path

from facesift.common.config import add_config_args

log = logging.getLogger("facesift.redundancy")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "redundancy", help="near-duplicate groups, keep.txt, redundancy measures and report.html (faiss)",
        description="Reads the output of `facesift embed` (or embeds --shards first) and writes summary.json, "
                    "groups.jsonl, keep.txt, duplicates.txt, clusters.tsv and report.html into --out.")
    p.add_argument("--emb", type=Path, help="directory written by `facesift embed`")
    p.add_argument("--shards", help="embed these shards first (into --emb, default <out>/emb) when needed")
    p.add_argument("--backbone", help="backbone.pt for embedding --shards")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--by", choices=["emb", "phash", "dhash", "emb+phash"], help="what defines a duplicate (emb)")
    p.add_argument("--threshold", type=float, help="cosine similarity at/above which embeddings are duplicates (0.85)")
    p.add_argument("--hamming", type=int, help="max Hamming distance for hash duplicates, inclusive (8)")
    p.add_argument("--grouping", choices=["components", "semdedup"], help="components (default) or SemDeDup-style")
    p.add_argument("--keep", choices=["easy", "hard", "random"], help="which member of a group is kept (easy: the most typical)")
    p.add_argument("--clusters", type=int, help="k-means clusters (default ~sqrt(N))")
    p.add_argument("--index", choices=["auto", "flat", "ivf", "hnsw"], help="faiss index for the k-NN graph (auto: flat up to 1M rows, IVF above)")
    p.add_argument("--seed", type=int, help="k-means / random keep seed (0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Exit 0 done, 1 a damaged shard met while embedding --shards (or that embedding stopped
    early), 2 bad input or options (checked before anything is read or written)."""
    from facesift.analysis.config import RedundancyConfig
    from facesift.common.config import resolve
    from facesift.common.lock import LockHeld, output_lock
    try:
        cfg = resolve(RedundancyConfig, args.config, args.overrides, section="redundancy", by=args.by,
                      threshold=args.threshold, hamming=args.hamming, grouping=args.grouping, keep=args.keep,
                      clusters=args.clusters, seed=args.seed)
        if args.index:
            cfg.search.index = args.index
        cfg.check()
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    emb = args.emb or (args.out / "emb" if args.shards else None)
    if emb is None:
        log.error("give --emb DIR (from `facesift embed`) or --shards SPEC")
        return 2
    from facesift.analysis.embed import DamagedInput, EmbedError
    try:
        with output_lock(args.out, command="facesift redundancy"):
            return _run_locked(args, cfg, emb)
    except DamagedInput as exc:
        log.error("%s", exc)
        return 1
    except (EmbedError, FileNotFoundError, ValueError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2


def _run_locked(args, cfg, emb: Path) -> int:
    """Embed --shards when needed, then the redundancy run itself (`out` is locked by the caller)."""
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embed import embed_shards
    from facesift.analysis.redundancy import run_redundancy
    from facesift.common.config import save_config
    from facesift.common.logsetup import summary
    if args.shards and not (emb / "embeddings.npy").exists():
        log.info("embedding %s into %s first", args.shards, emb)
        res = embed_shards(args.shards, emb, EmbedConfig(backbone=args.backbone), progress=not args.no_progress)
        if res.get("damaged"):
            log.error("embedding stopped at the damaged shard %s; re-run to continue once it reads whole",
                      res["damaged"][0]["shard"])
            return 1
        if not res.get("complete"):
            log.error("embedding did not finish; re-run to continue")
            return 1
    result = run_redundancy(emb, args.out, cfg, progress=not args.no_progress)
    save_config(cfg, args.out / "redundancy-config.yaml")
    summary("redundancy", images=result["valid"], pairs=result["pairs"], groups=result["groups"],
            duplicates=result["duplicates"], kept=result["kept"],
            unique_fraction=f"{result['unique_fraction']:.3f}",
            effective_clusters=f"{result['clusters']['effective_clusters']:.1f}",
            report=args.out / "report.html")
    return 0
