"""Issue 12's check: seeded sandbox crawls with same-second bursts, unstable tie order and faults.

    .venv/bin/python tools/bench_crawl.py [--runs 10] [--count 50000] [--fault-rate 0.2] [--seed 0]

Each run builds a Flickr sandbox (`facesift.flickr_sandbox`) of `--count` photos matching
"faces" (plus a tenth unrelated), seeded `--seed + i`, with its defaults: a third of the photos
in owners' bursts of 5-20 uploads sharing one second, ties served in an order that changes per
request, and `--fault-rate` of the API calls failing (codes 105/201, HTTP 500/503, dropped
connections, answers slower than the client's timeout). The crawler runs in-process against it
(4 threads, rate limit off, fast backoff) into a fresh catalog, which is compared with the
server's ground truth: every photo matching the query and the default licence filter, opt-outs
left out. Per run it prints matched/ground truth, missing and extra ids, the API calls spent,
the ideal (1 per split probe + ceil(total/500) per final window), the re-read calls among them,
the retries, and spent/ideal; then one final line. Exit code 0 when every run was exact.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()
from facesift.curate.catalog import Catalog  # noqa: E402
from facesift.curate.crawl import DEFAULT_LICENSES, CrawlConfig, RetryConfig, crawl  # noqa: E402
from facesift.flickr_sandbox import FlickrSandbox, SandboxConfig  # noqa: E402

DEFAULT_PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def run_once(photos: Path, count: int, seed: int, fault_rate: float, threads: int,
             workdir: Path) -> dict:
    """One seeded crawl of a fresh sandbox; the figures of one output line."""
    sb_cfg = SandboxConfig(photos=str(photos), queries={"faces": count}, unrelated=count // 10,
                           seed=seed, fault_rate=fault_rate, slow_api_seconds=1.5)
    with FlickrSandbox(sb_cfg) as sb:
        truth = sb.expected_ids("faces", DEFAULT_LICENSES)
        catalog = workdir / f"catalog-{seed}.sqlite"
        cfg = CrawlConfig(queries=["faces"], licenses=list(DEFAULT_LICENSES), catalog=str(catalog),
                          api_url=sb.api_url, api_key="bench-key-1234", api_secret="bench-secret-5678",
                          min_date=sb_cfg.min_date, max_date=sb_cfg.max_date, rate=1e9,
                          threads=threads, timeout=1.0, seed=seed,
                          retry=RetryConfig(attempts=10, base_delay=0.005, max_delay=0.05))
        t0 = time.perf_counter()
        stats = crawl(cfg, progress=False)
        seconds = time.perf_counter() - t0
        server_calls = sb.api_calls
        faults = sum(sb.faults_injected.values())
    with Catalog(catalog) as cat:
        got = {r["id"] for r in cat.all_photos()}
    return {"seed": seed, "truth": len(truth), "matched": len(got & truth),
            "missing": len(truth - got), "extra": len(got - truth),
            "api_calls": stats["api_calls"], "server_calls": server_calls,
            "ideal_calls": stats["ideal_calls"], "reread_calls": stats["reread_calls"],
            "retries": stats["retries"], "faults": faults,
            "incomplete": stats["windows_incomplete"], "failed": stats["windows_failed"],
            "seconds": seconds}


def line(r: dict) -> str:
    ratio = r["api_calls"] / max(1, r["ideal_calls"])
    return (f"seed {r['seed']:>3}: matched {r['matched']}/{r['truth']}  missing {r['missing']}  "
            f"extra {r['extra']}  calls {r['api_calls']} (server {r['server_calls']})  "
            f"ideal {r['ideal_calls']}  re-reads {r['reread_calls']}  retries {r['retries']}  "
            f"ratio {ratio:.3f}  windows incomplete/failed {r['incomplete']}/{r['failed']}  "
            f"{r['seconds']:.1f}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--count", type=int, default=50_000, help="photos matching the query")
    p.add_argument("--fault-rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="first seed; run i uses seed + i")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of source images")
    args = p.parse_args(argv)
    if args.runs < 1 or args.count < 1 or not 0 <= args.fault_rate < 1:
        print("--runs and --count must be at least 1, --fault-rate within [0, 1)", file=sys.stderr)
        return 2
    if not args.photos.is_dir():
        print(f"no folder of photos at {args.photos} (--photos)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    print(f"{args.runs} crawl(s) of {args.count} photos, faults {args.fault_rate:.0%}, "
          f"{args.threads} threads", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        for i in range(args.runs):
            results.append(run_once(args.photos, args.count, args.seed + i, args.fault_rate,
                                    args.threads, Path(tmp)))
            print(line(results[-1]), flush=True)
            Path(tmp, f"catalog-{args.seed + i}.sqlite").unlink(missing_ok=True)
    exact = sum(r["missing"] == r["extra"] == 0 for r in results)
    spent, ideal = sum(r["api_calls"] for r in results), sum(r["ideal_calls"] for r in results)
    rereads, retries = sum(r["reread_calls"] for r in results), sum(r["retries"] for r in results)
    print(f"{exact}/{len(results)} runs equal to the ground truth; API calls {spent} against "
          f"ideal {ideal} (ratio {spent / max(1, ideal):.3f}: re-reads {rereads} = "
          f"{rereads / max(1, ideal):.1%} of ideal, retries {retries}); "
          f"{sum(r['seconds'] for r in results):.0f}s crawling")
    return 0 if exact == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
