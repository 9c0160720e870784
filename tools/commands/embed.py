"""`facesift embed`: shards -> L2-normalised float16 embeddings + perceptual hashes (resumable)."""
from __future__ import annotations

import logging
from pathlib import Path

from facesift.common.config import add_config_args

log = logging.getLogger("facesift.embed")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "embed", help="embed shards (ResNet backbone or a weight-free HOG/DCT embedding) + pHash/dHash",
        description="Stream shards in index order into <out>/embeddings.npy (float16, L2-normalised, "
                    "memory-mapped), hashes.npy, keys.txt, meta.jsonl. Re-running resumes. Under torchrun "
                    "each rank joins the process group and embeds a contiguous slice.")
    p.add_argument("--shards", required=True, help="shard dir, index.json, brace pattern, URLs (comma-separated)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--backbone", help="backbone.pt (from `facesift pretrain`); default: weight-free embedding")
    p.add_argument("--arch", help="torchvision ResNet name (inferred from the checkpoint when omitted)")
    p.add_argument("--embedding", choices=["hog", "dct"], help="weight-free embedding when no --backbone (hog)")
    p.add_argument("--batch-size", type=int, help="images per batch (64)")
    p.add_argument("--image-size", type=int, help="CNN input size (224)")
    p.add_argument("--workers", type=int, help="decode threads (4)")
    p.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")
    p.add_argument("--max-batches", type=int, help="stop after N batches (re-run to continue)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Exit 0 done (or stopped by --max-batches), 1 a damaged shard, 2 bad input or options,
    128+N stopped by signal N at a checkpoint; the same command continues an unfinished run."""
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embed import DamagedInput, EmbedError, embed_shards
    from facesift.common.config import resolve, save_config
    from facesift.common.lock import LockHeld
    from facesift.common.logsetup import summary
    from facesift.common.stopping import GracefulStop, stop_code
    try:
        cfg = resolve(EmbedConfig, args.config, args.overrides, section="embed", backbone=args.backbone,
                      arch=args.arch, embedding=args.embedding, batch_size=args.batch_size,
                      image_size=args.image_size, workers=args.workers, device=args.device,
                      max_batches=args.max_batches)
        cfg.check()
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if cfg.backbone and not Path(cfg.backbone).is_file():
        log.error("backbone not found: %s", cfg.backbone)
        return 2
    try:
        with GracefulStop():
            result = embed_shards(args.shards, args.out, cfg, progress=not args.no_progress)
    except DamagedInput as exc:
        log.error("%s", exc)
        summary("embed", rows=0, damaged_shards=len(exc.damaged), complete=False, out=args.out)
        return 1
    except (EmbedError, FileNotFoundError, ValueError, LockHeld, NotADirectoryError) as exc:
        log.error("%s", exc)
        return 2
    if result.get("complete"):
        save_config(cfg, args.out / "embed-config.yaml")
    damaged = result.get("damaged", [])
    summary("embed", rows=result["rows"], embedded=result.get("embedded", 0), errors=result.get("errors", 0),
            resumed_from=result.get("resumed_from", 0), dim=result["dim"], embedder=result["embedder"],
            damaged_shards=len(damaged), complete=result.get("complete", False), out=args.out)
    if damaged:
        log.error("stopped at the damaged shard %s, with a checkpoint: re-run the same command to continue "
                  "once it reads whole (rows must follow the index, so it cannot be skipped)", damaged[0]["shard"])
        return 1
    if result.get("stopped"):
        log.warning("stopped by %s at a checkpoint; re-run the same command to continue", result["stopped"])
        return stop_code(result["stopped"])
    return 0
