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
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embed import EmbedError, embed_shards
    from facesift.common.config import resolve, save_config
    from facesift.common.logsetup import summary
    try:
        cfg = resolve(EmbedConfig, args.config, args.overrides, section="embed", backbone=args.backbone,
                      arch=args.arch, embedding=args.embedding, batch_size=args.batch_size,
                      image_size=args.image_size, workers=args.workers, device=args.device,
                      max_batches=args.max_batches)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if cfg.backbone and not Path(cfg.backbone).exists():
        log.error("backbone not found: %s", cfg.backbone)
        return 2
    try:
        result = embed_shards(args.shards, args.out, cfg, progress=not args.no_progress)
    except (EmbedError, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if result.get("complete"):
        save_config(cfg, args.out / "embed-config.yaml")
    summary("embed", rows=result["rows"], embedded=result.get("embedded", 0), errors=result.get("errors", 0),
            resumed_from=result.get("resumed_from", 0), dim=result["dim"], embedder=result["embedder"],
            complete=result.get("complete", False), out=args.out)
    return 0
