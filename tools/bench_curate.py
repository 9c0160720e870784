"""Benchmark `facesift curate` against img2dataset, and the curate pipeline against its detector.

    .venv/bin/python tools/bench_curate.py [--count 2000] [--threads 16] [--detect-count 48] [--device cuda] [--keep]

One run, same images, same loopback server, printing a table and two ratios:

1. download + decode + resize to 256 + write webdataset shards:
   `facesift curate --from-urls --detector none` vs `img2dataset` (webdataset output, 256 px,
   centre crop, JPEG quality 95, same thread count, one process). Goal: facesift ≥ 1.5×.
   Two facesift rows: `facesift` with its defaults (every crop also gets the sharpness, pHash
   and dHash that img2dataset does not compute) and `facesift-lean` with
   `--set filter.measures=false` (the same work as img2dataset: no per-crop measures).
   A `ceiling` row times the same images through curate's own decode, resize and encode
   functions on one process per core with nothing else (no download, queue or shards), and
   each facesift row's share of it is printed. Goal ≥ 70 %: the pipeline around the pixel
   work must cost less than a third of it.
2. end-to-end curate (download → detect → align → shard) vs the same detector alone on the
   same images pre-decoded, same batch size, run the way curate runs it (its detector workers
   side by side, `curate.detect.parallelism`): pipeline efficiency = pipeline ÷ detector
   images/s. Goal ≥ 0.9 (the pipeline must be detector-bound, not I/O-bound). The detector
   alone as one worker with every core as torch threads is timed too, and the detector
   workers' busy share inside the pipeline is read from its stats.json.

The images are the issue-2 Flickr sandbox's photos (`facesift.flickr_sandbox`, per-id variants on,
so every URL has different bytes) built from `--photos` folders, generated once and then served
as static files by a separate loopback HTTP/1.1 server process, so serving costs both tools the
same and generating variants is not part of anyone's time (an asyncio server with the files in
memory: `http.server` could not serve small images as fast as the tools take them). Every tool runs as a subprocess and
is timed two ways: "wall" (the whole command, with interpreter start-up, imports, model loading
and exit) and "work" (from the first image request the server sees to the last output file
written: download, decode, resize/detect, encode and shard writing themselves), plus its CPU
seconds. The detector-alone baseline also runs in a fresh process (model built before timing),
so both sides pay torch's per-shape kernel set-up. Each side runs `--repeat` (part 1) or
`--repeat-detect` (part 2) times, alternating, and its best run is reported: on a shared
machine noise only ever adds time.

img2dataset pins an older stack, so it lives in its own virtualenv, `.bench/img2dataset`,
created on first use (`pip install img2dataset`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()
from facesift.common.images import IMAGE_SUFFIXES  # noqa: E402

BENCH = ROOT / ".bench"
I2D_VENV = BENCH / "img2dataset"
DEFAULT_PHOTOS = [ROOT.parent / "shared" / "data" / "photos", ROOT.parent / "shared" / "data" / "yalefaces"]


# ---- set-up ------------------------------------------------------------------------------------

def ensure_img2dataset() -> Path:
    """`.bench/img2dataset/bin/img2dataset`, creating the virtualenv on first use."""
    exe = I2D_VENV / "bin" / "img2dataset"
    if exe.exists():
        return exe
    print(f"creating {I2D_VENV} and installing img2dataset (first use only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True)
    subprocess.run([str(I2D_VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def flat_sources(folders: list[Path], into: Path) -> Path:
    """One flat folder of symlinks (the sandbox reads a single, non-recursive folder)."""
    into.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"--photos {folder}: not a directory")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                link = into / f"{folder.name}-{path.name}"
                if not link.exists():
                    link.symlink_to(path.resolve())
    return into


def materialise(folders: list[Path], count: int, seed: int, www: Path) -> list[str]:
    """Sandbox photos written as static files; returns their URL paths in catalogue order.

    The sandbox makes each id's variant on request (crop, scale, brightness, JPEG quality);
    generating them once here keeps that CPU work out of both tools' timings.
    """
    from facesift.flickr_sandbox import FlickrSandbox, SandboxConfig

    manifest = www / "manifest.json"
    key = {"count": count, "seed": seed, "photos": [str(f) for f in folders]}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == key:
            return saved["paths"]
    shutil.rmtree(www, ignore_errors=True)
    sources = flat_sources(folders, www.parent / "sources")
    cfg = SandboxConfig(photos=str(sources), queries={"faces": count}, seed=seed, no_cv_rate=0.0,
                        no_url_c_rate=0.0, variants=True)
    paths = []
    with FlickrSandbox(cfg) as sandbox:
        for photo in sandbox.photos:
            url = sandbox.photo_url(photo, "c")
            path = url.split("://", 1)[1].split("/", 1)[1]
            (www / path).parent.mkdir(parents=True, exist_ok=True)
            (www / path).write_bytes(sandbox.image_bytes(photo, "c"))
            paths.append(path)
    manifest.write_text(json.dumps({"key": key, "paths": paths}))
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(www: Path, port: int) -> None:
    """The loopback image server (its own process): files preloaded in memory, HTTP/1.1 keep-alive
    (and `Connection: close` when a client asks for it), one asyncio loop.

    Python's `http.server` tops out around 350 small images/s on two shared cores, below what
    either tool can take, so it would time the server rather than the tools; this one answers a
    request in a few tens of microseconds, the same for every client.

    It notes when the first and last image requests of a run arrive (`/__reset`, `/__stats`),
    which times every tool the same way from the outside: from its first request to its exit,
    i.e. without interpreter start-up, imports and model loading.
    """
    import asyncio
    import mimetypes
    import threading

    files = {"/" + p.relative_to(www).as_posix(): p.read_bytes() for p in www.rglob("*") if p.is_file()}
    ctypes = {k: (mimetypes.guess_type(k)[0] or "application/octet-stream") for k in files}
    state = {"first": None, "last": None, "requests": 0}

    def response(status: str, body: bytes, ctype: str, close: bool) -> bytes:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
        return head.encode("latin-1") + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split()
                path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
                close = any(h.lower().replace(" ", "") == "connection:close" for h in lines[1:]) or \
                    (len(parts) >= 3 and parts[2] == "HTTP/1.0")
                if path.startswith("/__"):
                    if path == "/__reset":
                        state.update(first=None, last=None, requests=0)
                    out = response("200 OK", json.dumps(state).encode(), "application/json", close)
                else:
                    now = time.time()
                    state["first"] = state["first"] or now
                    state["last"] = now
                    state["requests"] += 1
                    body = files.get(urllib.parse.unquote(path))
                    out = response("200 OK", body, ctypes[urllib.parse.unquote(path)], close) if body is not None \
                        else response("404 Not Found", b"not found\n", "text/plain", close)
                writer.write(out)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    def orphan_watch(parent: int = os.getppid()) -> None:
        while os.getppid() == parent:      # the bench was killed: do not outlive it
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=orphan_watch, daemon=True).start()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def server_state(base: str, reset: bool = False) -> dict:
    with urllib.request.urlopen(base + ("/__reset" if reset else "/__stats"), timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def static_server(www: Path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(www),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                server_state(base)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the image server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- runs --------------------------------------------------------------------------------------

@dataclass
class Timing:
    wall: float        # the whole command: start-up, imports, model loading, work, exit
    window: float      # first image request to the last output file written: the work itself
    written: int       # samples in the output shards
    tail: float        # last image request to the last output file written
    exit: float        # last output file written to process exit (teardown)
    cpu: float         # user + system CPU seconds of the command and its children (load-independent)


def timed(cmd: list[str], log: Path, base: str, out: Path, env: dict | None = None) -> dict:
    """Run one command; times from the server's first/last request and the output files' mtimes."""
    server_state(base, reset=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, start_wall = time.perf_counter(), time.time()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    elapsed, end_wall = time.perf_counter() - start, time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed (rc={rc}): {' '.join(cmd)}\n--- {log} ---\n{tail}")
    state = server_state(base)
    first, last = state["first"] or start_wall, state["last"] or start_wall
    done = max((p.stat().st_mtime for p in out.rglob("*") if p.is_file()), default=end_wall)
    return {"wall": elapsed, "window": done - first, "tail": done - last, "exit": end_wall - done, "cpu": cpu}


FACESIFT_VARIANTS = {  # part 1 rows: name → extra `--set` options (stated in the output)
    "facesift": [],
    "facesift-lean": ["filter.measures=false"],
}


def run_facesift(urls: Path, out: Path, threads: int, detector: str, batch: int, log: Path,
                 base: str, sets: list[str] = (), device: str = "cpu") -> Timing:
    exe = ROOT / ".venv" / "bin" / "facesift"  # without the venv (a GPU machine's own python): the module
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "facesift"]
    cmd = [*cli, "-q", "curate", "--from-urls", str(urls), "--out", str(out),
           "--detector", detector, "--workers", str(threads), "--batch-size", str(batch), "--no-progress",
           "--set", "align.crop_size=256", "--set", "align.jpeg_quality=95", "--set", f"detect.device={device}",
           "--set", f"download.per_host={threads}"]  # img2dataset has no per-host cap: same concurrency
    for opt in sets:
        cmd += ["--set", opt]
    times = timed(cmd, log, base, out)
    index = json.loads((out / "index.json").read_text()) if (out / "index.json").exists() else {"shardlist": []}
    return Timing(written=sum(int(e["nsamples"]) for e in index["shardlist"]), **times)


def run_img2dataset(exe: Path, urls: Path, out: Path, threads: int, log: Path, base: str) -> Timing:
    cmd = [str(exe), "--url_list", str(urls), "--input_format", "txt", "--output_format", "webdataset",
           "--output_folder", str(out), "--image_size", "256", "--resize_mode", "center_crop",
           "--encode_quality", "95", "--processes_count", "1", "--thread_count", str(threads),
           "--number_sample_per_shard", "10000", "--retries", "0", "--timeout", "20",
           "--enable_wandb", "False", "--distributor", "multiprocessing"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    times = timed(cmd, log, base, out, env)
    ok = sum(json.loads(p.read_text()).get("successes", 0) for p in out.glob("*_stats.json"))
    return Timing(written=ok, **times)


def detector_alone(paths: list[Path], batch: int, workers: int = 0, threads: int = 0,
                   device: str = "cpu") -> tuple[float, int, float]:
    """The curate detector on pre-decoded images, same batches, as many batches side by side as
    curate runs (or `workers` × `threads`): (seconds, faces, CPU seconds).

    Runs in a fresh process, like the pipeline: torch's per-shape kernel set-up is paid by both
    (a warm process would flatter the detector)."""
    listing = BENCH / "curate" / "detector-alone.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--detector-alone", str(listing),
                          "--batch-size", str(batch), "--detector-workers", str(workers),
                          "--detector-threads", str(threads), "--device", device],
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["seconds"], result["faces"], result["cpu"]


def _detector_alone_here(paths: list[Path], batch: int, workers: int, threads: int, device: str) -> dict:
    import concurrent.futures as cf

    import numpy as np
    from PIL import Image, ImageOps

    from facesift.curate.config import DetectConfig
    from facesift.curate.detect import build_detector

    images = []
    for path in paths:
        with Image.open(path) as im:
            images.append(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))
    detector = build_detector(DetectConfig(backend="mtcnn", device=device, batch_size=batch, workers=workers,
                                           threads=threads), isolate=False)  # the detector itself, in-process
    detector.detect(images[:1])                               # first call allocates; not timed (as curate's)
    batches = [images[s:s + batch] for s in range(0, len(images), batch)]
    start, cpu = time.perf_counter(), time.process_time()
    if detector.workers > 1:  # as curate runs it: batches side by side, or on the main thread
        with cf.ThreadPoolExecutor(detector.workers) as pool:
            faces = sum(len(d) for dets in pool.map(detector.detect, batches) for d in dets)
    else:
        faces = sum(len(d) for b in batches for d in detector.detect(b))
    return {"seconds": time.perf_counter() - start, "faces": faces, "cpu": time.process_time() - cpu}


def _ceiling_one(path: str) -> int:
    """Decode (JPEG draft at 256, as curate's `--detector none`), centre-crop to 256, encode q95."""
    import io

    from PIL import Image

    from facesift.curate.align import resize_center_crop
    from facesift.curate.download import decode_pil
    image = resize_center_crop(decode_pil(Path(path).read_bytes(), 10**9, draft=256), 256)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.tell()


def ceiling(paths: list[Path], cores: int) -> float:
    """Part 1's ceiling: the same images through curate's own decode, resize and encode functions,
    one process per core, no downloads, no queues, no shard writing. Seconds for all of them
    (the pool is started and warmed first: its start-up is not part of the work)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(cores, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_ceiling_one, [str(p) for p in paths[:cores]]))     # imports and first calls
        start = time.perf_counter()
        written = sum(pool.map(_ceiling_one, [str(p) for p in paths], chunksize=8))
        seconds = time.perf_counter() - start
    if written <= 0:
        raise SystemExit("ceiling: nothing encoded")
    return seconds


# ---- the run -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000,
                        help="images for part 1 (default 2000: fewer time the start of the run, and "
                             "curate's download processes start from 1,000 photos)")
    parser.add_argument("--detect-count", type=int, default=48,
                        help="images for part 2, the first of the same list (default 48)")
    parser.add_argument("--repeat-detect", type=int, default=2,
                        help="part 2 runs of each side, alternating; the best is reported (default 2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="part 1 runs per tool, alternating; the best is reported (default 3)")
    parser.add_argument("--threads", type=int, default=16, help="download threads, both tools (default 16)")
    parser.add_argument("--batch-size", type=int, default=16, help="detector batch size (default 16)")
    parser.add_argument("--photos", type=Path, action="append",
                        help="source photo folder (repeatable; default ../shared/data/photos + yalefaces, "
                             "else the bundled data/sample/photos)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the outputs under .bench/curate/run")
    parser.add_argument("--skip", choices=["img2dataset", "lean", "part1", "part2"], action="append", default=[],
                        help="leave out part 1's peer, part 1's facesift-lean row, all of part 1 or all of "
                             "part 2 (repeatable)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)   # internal: the image server
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--detector-alone", type=Path, help=argparse.SUPPRESS)  # internal: part 2's baseline
    parser.add_argument("--device", default="cpu", help="part 2's detector device: cpu (default) or cuda")
    parser.add_argument("--curate-set", action="append", default=[], metavar="KEY=VALUE",
                        help="part 2: extra `--set` for the curate pipeline (e.g. detect.isolate=off), for A/B runs")
    parser.add_argument("--detector-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--detector-threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.detector_alone:
        paths = [Path(line) for line in args.detector_alone.read_text().splitlines() if line]
        print(json.dumps(_detector_alone_here(paths, args.batch_size, args.detector_workers, args.detector_threads,
                                              args.device)))
        return 0
    folders = args.photos or [f for f in DEFAULT_PHOTOS if f.is_dir()] or [ROOT / "data" / "sample" / "photos"]

    work = BENCH / "curate"
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    exe = ensure_img2dataset() if not {"img2dataset", "part1"} & set(args.skip) else None
    print(f"preparing {args.count} sandbox photos from {', '.join(map(str, folders))} ...", flush=True)
    www = work / "www"
    paths = materialise(folders, args.count, args.seed, www)
    nbytes = sum((www / p).stat().st_size for p in paths)
    ndet = min(args.detect_count, len(paths))
    tools = [] if "part1" in args.skip else \
        ["facesift"] + ([] if "lean" in args.skip else ["facesift-lean"]) + (["img2dataset"] if exe else [])
    part1: dict[str, list[Timing]] = {t: [] for t in tools}
    ceilings: list[float] = []
    cores = os.cpu_count() or 1
    part2 = None

    with static_server(www) as base:
        lists = {}
        for name, subset in (("all", paths), ("det", paths[:ndet])):
            lists[name] = run / f"urls-{name}.txt"
            lists[name].write_text("".join(f"{base}/{p}\n" for p in subset))
        if tools:
            print(f"part 1: {len(paths)} images ({nbytes / len(paths) / 1024:.0f} KB mean), "
                  f"{args.threads} threads, {args.repeat} run(s) each ...", flush=True)
        for r in range(args.repeat if tools else 0):
            for tool in (tools if r % 2 else list(reversed(tools))):
                out, log = run / f"{tool}-{r}", run / f"{tool}-{r}.log"
                if tool in FACESIFT_VARIANTS:
                    t = run_facesift(lists["all"], out, args.threads, "none", args.batch_size, log, base,
                                     FACESIFT_VARIANTS[tool])
                else:
                    t = run_img2dataset(exe, lists["all"], out, args.threads, log, base)
                part1[tool].append(t)
                print(f"  {tool:<12} run {r + 1}: wall {t.wall:6.2f} s, work {t.window:6.2f} s "
                      f"({t.tail:5.2f} s after the last download), exit {t.exit:5.2f} s, "
                      f"cpu {t.cpu:5.1f} s, {t.written} written", flush=True)
            ceilings.append(ceiling([www / p for p in paths], cores))
            print(f"  {'ceiling':<12} run {r + 1}: {ceilings[-1]:6.2f} s (decode+resize+encode, {cores} processes)",
                  flush=True)
        if "part2" not in args.skip:
            print(f"part 2: {ndet} images, mtcnn on {args.device}, batch {args.batch_size}, "
                  f"{args.repeat_detect} run(s) each ...", flush=True)
            pipes, dets, dets_all = [], [], []
            all_cores = os.cpu_count() or 1
            for r in range(args.repeat_detect):
                t_det, faces_det, cpu_det = detector_alone([www / p for p in paths[:ndet]], args.batch_size,
                                                           device=args.device)
                dets.append((t_det, faces_det, cpu_det))
                print(f"  detector alone run {r + 1}: {t_det:6.2f} s, cpu {cpu_det:5.1f} s", flush=True)
                if args.device == "cpu":
                    t_one, faces_one, cpu_one = detector_alone([www / p for p in paths[:ndet]], args.batch_size,
                                                               workers=1, threads=all_cores)
                    dets_all.append((t_one, faces_one, cpu_one))
                    print(f"  detector alone, 1 worker x {all_cores} threads, run {r + 1}: {t_one:6.2f} s, "
                          f"cpu {cpu_one:5.1f} s", flush=True)
                pipe = run_facesift(lists["det"], run / f"pipeline-{r}", args.threads, "mtcnn",
                                    args.batch_size, run / f"pipeline-{r}.log", base, sets=args.curate_set,
                                    device=args.device)
                pipes.append(pipe)
                print(f"  curate pipeline run {r + 1}: wall {pipe.wall:6.2f} s, work {pipe.window:6.2f} s "
                      f"({pipe.tail:5.2f} s after the last download), exit {pipe.exit:5.2f} s, "
                      f"cpu {pipe.cpu:5.1f} s", flush=True)
            best_run = min(range(len(pipes)), key=lambda i: pipes[i].window)
            shutil.copy(run / f"pipeline-{best_run}" / "stats.json", run / "pipeline-best-stats.json")
            part2 = (pipes[best_run], *min(dets), min(dets_all) if dets_all else None)

    n = len(paths)
    print()
    print(f"bench_curate: {n} images ({nbytes / n / 1024:.0f} KB mean, sandbox variants of "
          f"{', '.join(f.name for f in folders)}), {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    if tools:
        print(f"part 1 - download + decode + resize 256 + webdataset shards (best of {args.repeat})")
        print(f"  {'tool':<15}{'written':>8}{'wall s':>9}{'work s':>9}{'img/s (work)':>14}{'img/s (wall)':>14}"
              f"{'cpu s':>8}")
    best = {}
    for tool in tools:
        b = best[tool] = min(part1[tool], key=lambda t: t.window)
        print(f"  {tool:<15}{b.written:>8}{b.wall:>9.2f}{b.window:>9.2f}{n / b.window:>14.1f}{n / b.wall:>14.1f}"
              f"{b.cpu:>8.1f}")
    for tool in (t for t in tools if t in FACESIFT_VARIANTS and "img2dataset" in best):
        fs, i2d = best[tool], best["img2dataset"]
        per_run = ", ".join(f"{b.window / a.window:.2f}" for a, b in zip(part1[tool], part1["img2dataset"]))
        print(f"  ratio {tool} / img2dataset: {i2d.window / fs.window:.2f}x on work time "
              f"(per run: {per_run}), {i2d.wall / fs.wall:.2f}x on wall time   (goal >= 1.5x)")
    for tool in (t for t in tools if t in FACESIFT_VARIANTS):
        extra = " ".join(f"--set {o}" for o in FACESIFT_VARIANTS[tool])
        print(f"  {tool}: curate --detector none --workers {args.threads} --set align.crop_size=256 "
              f"--set align.jpeg_quality=95 --set download.per_host={args.threads} {extra}".rstrip()
              + ("   (defaults: sharpness + pHash + dHash per crop)" if not extra else
                 "   (no per-crop sharpness/pHash/dHash, like img2dataset)"))
    if tools:
        top = min(ceilings)
        print(f"  {'ceiling':<15}{n:>8}{'':>9}{top:>9.2f}{n / top:>14.1f}{'':>14}{'':>8}   (the same images "
              f"decoded, resized and JPEG-encoded by curate's own functions on {cores} processes: no "
              "download, queue or shards)")
        for tool in (t for t in tools if t in FACESIFT_VARIANTS):
            print(f"  {tool} share of the ceiling: {top / best[tool].window:.0%} on work time   (goal >= 70%)")
        print("  work = first image request to the last output file written (no start-up, imports or exit);"
              " wall = the whole command")
    if part2:
        pipe, t_det, faces_det, cpu_det, on_all = part2
        busy = json.loads((run / "pipeline-best-stats.json").read_text())["last_run"]
        workers = busy["detect_workers"]
        from facesift.curate.config import DetectConfig
        from facesift.curate.detect import isolated
        opts = dict(o.split("=", 1) for o in args.curate_set)
        own = isolated(DetectConfig(device=args.device, isolate=opts.get("detect.isolate", "auto")))
        print(f"part 2 - curate pipeline vs detector alone (mtcnn, {args.device}, batch {args.batch_size}, "
              f"{ndet} images, best of {args.repeat_detect}; curate runs "
              + (f"the detector in its own process, {workers} batches in flight" if own else
                 f"{workers} detector worker(s)")
              + (f" x {max(1, (os.cpu_count() or 1) // max(1, workers))} torch threads" if args.device == "cpu" and not own
                 else "")
              + (f"; extra: {' '.join(args.curate_set)})" if args.curate_set else ")"))
        print(f"  {'run':<52}{'seconds':>9}{'img/s':>9}{'faces':>7}{'cpu s':>8}")
        print(f"  {'detector alone, pre-decoded, as curate runs it':<52}{t_det:>9.2f}{ndet / t_det:>9.2f}"
              f"{faces_det:>7}{cpu_det:>8.1f}")
        if on_all:
            print(f"  {f'detector alone, 1 worker x {os.cpu_count()} torch threads':<52}{on_all[0]:>9.2f}"
                  f"{ndet / on_all[0]:>9.2f}{on_all[1]:>7}{on_all[2]:>8.1f}")
        print(f"  {'curate: download+detect+align+shard (work)':<52}{pipe.window:>9.2f}{ndet / pipe.window:>9.2f}"
              f"{pipe.written:>7}")
        print(f"  {'curate, whole command (wall)':<52}{pipe.wall:>9.2f}{ndet / pipe.wall:>9.2f}{'':>7}"
              f"{pipe.cpu:>8.1f}")
        print(f"  pipeline efficiency = {t_det / pipe.window:.2f} on work time, {t_det / pipe.wall:.2f} on wall "
              f"time   (goal >= 0.9)")
        print(f"  inside the pipeline the detector workers were busy {busy['detector_busy']:.1%} of the "
              f"{busy['detect_loop_s']:.2f} s detection loop ({busy['detect_s']:.2f} worker-seconds; the main thread "
              f"waited {busy['input_wait_s']:.2f} s for downloads)")
        if on_all:
            print(f"  pipeline vs the detector alone with 1 worker x {os.cpu_count()} torch threads: "
                  f"{on_all[0] / pipe.window:.2f} on work time")
    if args.keep:
        print(f"outputs kept in {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
