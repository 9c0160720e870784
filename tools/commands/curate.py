"""`facesift curate`: download, detect, align and crop faces into webdataset shards."""
from __future__ import annotations

import argparse
import logging
import sqlite3

from facesift.common.config import add_config_args

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "curate", help="download photos, detect and align faces, write webdataset shards",
        description="Take the pending photos of a crawl catalog (or every image of a folder, or "
                    "a URL list), download them concurrently, detect faces, filter and align "
                    "them, and write aligned crops with full provenance into webdataset shards. "
                    "Re-running the same command resumes; each photo's status goes back into "
                    "the catalog.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--catalog", help="catalog.sqlite from `facesift crawl`")
    src.add_argument("--from-dir", help="curate every image under this folder (recursive)")
    src.add_argument("--from-urls", help="a .txt (one URL a line), .csv or .parquet with a `url` column")
    p.add_argument("--out", help="shard directory (default work/shards); one run at a time "
                                 "(a second exits 2 naming the first), parts of one --part job may share it")
    p.add_argument("--detector", choices=["mtcnn", "scrfd", "none"],
                   help="face detector (default mtcnn); none = whole images, resized + centre-cropped")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, help="download/decode threads (default 16)")
    p.add_argument("--batch-size", type=int, help="images per detector call (default 16)")
    p.add_argument("--crop-size", type=int, help="aligned crop side in pixels (default 256)")
    p.add_argument("--min-interocular", type=float, help="minimum eye distance in source pixels (default 32)")
    p.add_argument("--part", help="K/N: process the K-th (0-based) of N deterministic slices; "
                                  "auto: from RANK/WORLD_SIZE (torchrun) or SLURM_PROCID/SLURM_NTASKS")
    p.add_argument("--limit", type=int, help="process at most N pending photos")
    p.add_argument("--retry-failed", action="store_true", default=None,
                   help="retry photos that failed in earlier runs (timeouts, server errors ...)")
    p.add_argument("--maxcount", type=int, help="samples per shard (default 10000)")
    p.add_argument("--maxsize", type=int, help="bytes per shard (default 1e9)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesift.common.config import resolve
    from facesift.common.logsetup import summary
    from facesift.common.stopping import GracefulStop, StopRequested, stop_code
    from facesift.curate.config import CurateConfig
    from facesift.curate.pipeline import run_curate

    def nested(section: str, **values) -> list[str]:
        return [f"{section}.{k}={v}" for k, v in values.items() if v is not None]

    overrides = (nested("download", workers=args.workers)
                 + nested("detect", backend=args.detector, device=args.device, batch_size=args.batch_size)
                 + nested("align", crop_size=args.crop_size)
                 + nested("filter", min_interocular=args.min_interocular)
                 + nested("shards", maxcount=args.maxcount, maxsize=args.maxsize))
    try:
        cfg = resolve(CurateConfig, args.config, overrides + list(args.overrides), section="curate",
                      catalog=args.catalog, from_dir=args.from_dir, from_urls=args.from_urls,
                      out=args.out, part=args.part, limit=args.limit, retry_failed=args.retry_failed)
    except (ValueError, OSError) as exc:
        log.error("bad configuration: %s", exc)
        return 2
    try:
        with GracefulStop():
            counts = run_curate(cfg, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError, sqlite3.DatabaseError) as exc:
        # a bad option or source, another run holding --out (LockHeld names its pid), a catalog
        # that is not one, or the writer thread's failure: all said in one line, no traceback
        log.error("%s", exc)
        return 2
    except OSError as exc:  # the disk filled, the output vanished ...: the stage failed
        log.error("curate failed: %s", exc)
        return 1
    except StopRequested as stop:
        log.warning("%s: every finished photo is in a complete shard; the same command continues", stop)
        return stop_code(stop.signal_name)
    summary("curate", **counts.summary(), out=cfg.out)
    return 0
