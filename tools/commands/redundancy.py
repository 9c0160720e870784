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
    p.add_argument("--threshold", type=float,
                   help="cosine similarity at/above which embeddings are duplicates (default: calibrated on known "
                        "copies of a sample of the dataset's own images)")
    p.add_argument("--hamming", type=int,
                   help="max Hamming distance for hash duplicates, inclusive (default: calibrated like --threshold)")
    p.add_argument("--target-precision", type=float,
                   help="estimated pair precision the calibrated thresholds are chosen for (0.99)")
    p.add_argument("--calibration-sample", type=int, help="dataset images the known copies are made from (300)")
    p.add_argument("--no-verify", action="store_true",
                   help="do not verify candidate pairs on aligned thumbnails (frames of one session may merge)")
    p.add_argument("--grouping", choices=["components", "semdedup"], help="components (default) or SemDeDup-style")
    p.add_argument("--keep", choices=["easy", "hard", "random"], help="which member of a group is kept (easy: the most typical)")
    p.add_argument("--clusters", type=int, help="k-means clusters (default ~sqrt(N))")
    p.add_argument("--index", choices=["auto", "flat", "ivf", "hnsw"],
                   help="faiss index for the k-NN graph (auto: exact up to search.exact_max rows, IVF above)")
    p.add_argument("--part", help="K/N (or auto, from torchrun/SLURM): only search every row against slice K of N "
                                  "and save it under <out>/knn-parts; a later run without --part merges the parts")
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
    from facesift.common.runtime import parse_part
    try:
        calibrate = {k: v for k, v in (("target_precision", args.target_precision),
                                        ("sample", args.calibration_sample)) if v is not None}
        cfg = resolve(RedundancyConfig, args.config, args.overrides, section="redundancy", by=args.by,
                      threshold=args.threshold, hamming=args.hamming, grouping=args.grouping, keep=args.keep,
                      clusters=args.clusters, seed=args.seed, calibrate=calibrate or None,
                      verify={"enabled": False} if args.no_verify else None)
        if args.index:
            cfg.search.index = args.index
        cfg.check()
        part = parse_part(args.part or "")
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    emb = args.emb or (args.out / "emb" if args.shards else None)
    if emb is None:
        log.error("give --emb DIR (from `facesift embed`) or --shards SPEC")
        return 2
    from facesift.analysis.embed import DamagedInput, EmbedError
    try:
        if part is not None:
            with output_lock(args.out, name=f".facesift.lock.part{part[0]}", command="facesift redundancy --part"):
                return _run_part(args, cfg, emb, *part)
        with output_lock(args.out, command="facesift redundancy"):
            return _run_locked(args, cfg, emb)
    except DamagedInput as exc:
        log.error("%s", exc)
        return 1
    except (EmbedError, FileNotFoundError, ValueError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2


def _run_part(args, cfg, emb: Path, part: int, parts: int) -> int:
    """One slice of the k-NN search, saved for the run that merges them (`analysis.knn_parts`)."""
    from facesift.analysis.redundancy import run_part
    from facesift.common.logsetup import summary
    res = run_part(emb, args.out, cfg, part, parts, progress=not args.no_progress)
    summary("redundancy part", part=f"{part}/{parts}", rows=f"{res['rows'][0]}-{res['rows'][1]}",
            index=res["index"], seconds=res["seconds"], saved=res["path"])
    return 0


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
    verification = result.get("verification") or {}
    summary("redundancy", images=result["valid"],
            threshold=f"{result['threshold']:.4g} ({result['threshold_source']})",
            **({"hamming": f"{result['hamming']} ({result['hamming_source']})"} if "hash" in result["by"] else {}),
            verified=(f"{verification.get('kept', 0)}/{verification.get('candidates', 0)} at "
                      f"{verification.get('threshold')}" if verification.get("enabled") else "no"),
            pairs=result["pairs"], groups=result["groups"],
            duplicates=result["duplicates"], kept=result["kept"],
            unique_fraction=f"{result['unique_fraction']:.3f}",
            effective_clusters=f"{result['clusters']['effective_clusters']:.1f}",
            report=args.out / "report.html")
    return 0
