#!/usr/bin/env python
"""Benchmark `facesift redundancy` against imagededup (quality + speed) and NumPy (scale).

    .venv/bin/python tools/bench_redundancy.py [--backbone ckpt/backbone.pt] [--sizes 25000,50000,100000,200000]

1. Known-duplicate set from ../shared/data (the one the tests use: originals + JPEG / resize /
   crop / light / rotate copies; Yale lighting and expression variants as hard negatives).
   Pair precision / recall / F1 and wall time of: facesift (default weight-free embedding, and
   the given backbone's features), imagededup PHash, imagededup CNN given the *same* backbone
   through `CustomModel` (no download). imagededup runs in its own virtualenv
   (.bench/imagededup, created here; it reuses .venv's torch through a .pth file and installs
   imagededup + PyWavelets without dependencies, so nothing is downloaded twice).
   Each method at its default threshold, and at the best threshold of a sweep (an oracle:
   it uses the ground truth, so it shows the ceiling of each representation).
2. Scale: near-duplicate pairs among N x 256 vectors with planted duplicates, facesift (IVF,
   what `index=auto` uses above `exact_max`) vs a NumPy blocked brute force (BLAS matmul); the
   brute force is timed on a fixed sample of query rows and scaled by N / sample (its cost is
   exactly linear in the number of queries), recall is measured on the same rows; peak RSS
   deltas; power-law fits of time vs N, projected to 1.5M rows (the paper's Flickr-Face size).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from checkout import ensure_importable, package_parent  # noqa: E402  (tools/ is sys.path[0])

ensure_importable()
BENCH = ROOT / ".bench"
SHARED = Path(os.environ.get("FACESIFT_TEST_DATA", ROOT.parent / "shared" / "data"))


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms (counts C++/BLAS allocations too)."""

    def __enter__(self):
        import psutil
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


# ---------------------------------------------------------------------------- part 1

IMAGEDEDUP_SCRIPT = r'''
import json, sys, time, torch
from PIL import Image
from imagededup.methods import PHash, CNN
from imagededup.utils import CustomModel
sys.path.insert(0, sys.argv[4])
from facesift.pretrain.backbone import load_backbone
image_dir, backbone, out = sys.argv[1], sys.argv[2], sys.argv[3]
torch.set_num_threads(2)
res = {}
t = time.perf_counter(); ph = PHash(verbose=False)
enc = ph.encode_images(image_dir=image_dir)
res["phash_encode_s"] = time.perf_counter() - t
res["phash_default"] = ph.find_duplicates(encoding_map=enc, max_distance_threshold=10)
res["phash_s"] = time.perf_counter() - t
res["phash_sweep"] = {d: ph.find_duplicates(encoding_map=enc, max_distance_threshold=d) for d in (2, 4, 6, 8, 12)}
import torchvision.transforms as T
model = load_backbone(backbone).eval()
size = int(sys.argv[5])
transform = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
t = time.perf_counter()
cnn = CNN(verbose=False, model_config=CustomModel(name="facesift-backbone", model=model, transform=transform))
enc = cnn.encode_images(image_dir=image_dir, num_enc_workers=0)
res["cnn_default"] = cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=0.9, num_sim_workers=1)
res["cnn_s"] = time.perf_counter() - t
res["cnn_sweep"] = {s: cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=s, num_sim_workers=1)
                    for s in (0.8, 0.85, 0.95, 0.97, 0.98, 0.99, 0.995)}
json.dump(res, open(out, "w"))
'''


def imagededup_python() -> Path:
    """`.bench/imagededup`: imagededup and PyWavelets on top of .venv's torch (no second torch)."""
    venv = BENCH / "imagededup"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    main_site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "facesift-venv.pth").write_text(main_site + "\n")
    if subprocess.run([str(py), "-c", "import imagededup, pywt"], capture_output=True).returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "imagededup==0.3.3.post2", "PyWavelets"],
                       check=True)
    return py


def backbone_path(arg: str | None, work: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), f"given backbone {arg}"
    import torch
    from facesift.pretrain.backbone import build_resnet
    path = work / "random-resnet18-backbone.pt"
    torch.manual_seed(0)
    torch.save(build_resnet("resnet18").state_dict(), path)
    return path, "random-init resnet18 (no --backbone given; no pretrained weights can be downloaded here)"


def pairs_of(dup_map: dict, row: dict[str, int]) -> set[tuple[int, int]]:
    out = set()
    for name, dups in dup_map.items():
        a = row[Path(name).stem]
        for d in dups:
            d = d[0] if isinstance(d, (list, tuple)) else d
            b = row[Path(d).stem]
            if a != b:
                out.add((min(a, b), max(a, b)))
    return out


def quality(args, work: Path) -> None:
    from facesift.analysis.config import EmbedConfig, SearchConfig
    from facesift.analysis.dupset import build, list_originals, score, truth_pairs
    from facesift.analysis.embed import embed_shards, load_embeddings
    from facesift.analysis.neardup import near_duplicate_pairs
    from facesift.analysis.redundancy import prepare_vectors
    import webdataset as wds

    originals = list_originals([("photos", SHARED / "photos", None), ("yale", SHARED / "yalefaces", None),
                                ("lfw", SHARED / "landmarks5" / "lfw_5590", 40),
                                ("net", SHARED / "landmarks5" / "net_7876", 40)])
    shard = work / "dupset" / "dup-000000.tar"
    families = build(originals, shard, seed=0)
    image_dir = work / "dupset-images"
    image_dir.mkdir(exist_ok=True)
    for s in wds.WebDataset(str(shard), shardshuffle=False):
        (image_dir / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
    backbone, backbone_note = backbone_path(args.backbone, work)
    print(f"known-duplicate set: {len(originals)} originals x 6 = {len(families)} images; backbone: {backbone_note} "
          f"at {args.image_size} px (both tools)", flush=True)

    results = []

    def ours(name: str, cfg: EmbedConfig, threshold: float):
        out = work / f"emb-{name}"
        import shutil
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        embed_shards(shard.parent, out, cfg, progress=False)
        data = load_embeddings(out)
        valid = np.ones(len(data["keys"]), bool)
        x = prepare_vectors(data["emb"], valid, center=True)
        i, j, _, _ = near_duplicate_pairs(x, threshold)
        elapsed = time.perf_counter() - t
        truth = truth_pairs(families, data["keys"])
        default = score(set(zip(i.tolist(), j.tolist())), truth)
        best = max(((t2, score(set(zip(*near_duplicate_pairs(x, t2)[:2])), truth))
                    for t2 in (0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99)), key=lambda r: r[1]["f1"])
        results.append((name, f"cos>={threshold}", default, f"cos>={best[0]}", best[1], elapsed))
        print(f"  {name}: done in {elapsed:.1f} s", flush=True)
        return data["keys"]

    from facesift.analysis.config import RedundancyConfig
    default_t = RedundancyConfig().threshold
    keys = ours("facesift hog (default)", EmbedConfig(), default_t)
    ours("facesift backbone", EmbedConfig(backbone=str(backbone), image_size=args.image_size, batch_size=32),
         default_t)
    row = {k: i for i, k in enumerate(keys)}
    truth = truth_pairs(families, keys)

    py = imagededup_python()
    out_json = work / "imagededup.json"
    script = work / "run_imagededup.py"
    script.write_text(IMAGEDEDUP_SCRIPT)
    t = time.perf_counter()
    r = subprocess.run([str(py), str(script), str(image_dir), str(backbone), str(out_json), str(package_parent()),
                        str(args.image_size)],
                       capture_output=True, text=True)
    if r.returncode:
        print("imagededup failed:\n" + r.stderr[-3000:])
        return
    res = json.loads(out_json.read_text())
    for name, key, sweep, default_label, fmt in (("imagededup PHash", "phash", "phash_sweep", "ham<=10", "ham<={}"),
                                                 ("imagededup CNN (same backbone)", "cnn", "cnn_sweep", "cos>=0.9",
                                                  "cos>={}")):
        default = score(pairs_of(res[f"{key}_default"], row), truth)
        sweeps = [(k, score(pairs_of(v, row), truth)) for k, v in res[sweep].items()] + [("default", default)]
        best = max(sweeps, key=lambda r: r[1]["f1"])
        label = default_label if best[0] == "default" else fmt.format(best[0])
        results.append((name, default_label, default, label, best[1], res[f"{key}_s"]))

    print(f"\n{'method':34s} {'default':>10s} {'P':>6s} {'R':>6s} {'F1':>6s} | {'best (oracle)':>13s} {'P':>6s} "
          f"{'R':>6s} {'F1':>6s} | {'time s':>7s}")
    for name, dl, d, bl, b, secs in results:
        print(f"{name:34s} {dl:>10s} {d['precision']:6.3f} {d['recall']:6.3f} {d['f1']:6.3f} | {bl:>13s} "
              f"{b['precision']:6.3f} {b['recall']:6.3f} {b['f1']:6.3f} | {secs:7.1f}")
    f1 = {name: d["f1"] for name, _, d, _, _, _ in results}
    base = f1["facesift hog (default)"]
    for name in ("imagededup PHash", "imagededup CNN (same backbone)"):
        print(f"F1 ratio facesift default / {name}: {base / max(f1[name], 1e-9):.2f}x")
    t_ours = results[0][5]
    print(f"time ratio imagededup PHash / facesift default: {results[2][5] / t_ours:.2f}x; "
          f"imagededup CNN / facesift backbone: {results[3][5] / results[1][5]:.2f}x")


# ---------------------------------------------------------------------------- part 2

def planted_vectors(n: int, d: int = 256, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (like real embeddings) with 2% planted near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(8, n // 500), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    m = n // 50
    src = rng.integers(m, n, m)
    x[:m] = x[src] + rng.uniform(0.05, 0.4, (m, 1)).astype(np.float32) * rng.standard_normal((m, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force_sample(x: np.ndarray, q: np.ndarray, t: float, block: int = 2048) -> set[tuple[int, int]]:
    out = set()
    for a in range(0, len(q), block):
        rows = q[a:a + block]
        sims = x[rows] @ x.T
        r, c = np.nonzero(sims >= t)
        for i, j in zip(rows[r].tolist(), c.tolist()):
            if i != j:
                out.add((min(i, j), max(i, j)))
    return out


def scale(args) -> None:
    from facesift.analysis.config import SearchConfig
    from facesift.analysis.neardup import near_duplicate_pairs
    sizes = [int(s) for s in args.sizes.split(",")]
    t = 0.9
    rows = []
    print(f"\nscale: N x 256 clustered vectors, 2% planted near-duplicates, threshold cos >= {t}; "
          f"NumPy brute force timed on {args.queries} query rows and scaled by N/{args.queries}")
    print(f"{'N':>8s} {'numpy s':>9s} {'facesift s':>10s} {'speed-up':>8s} {'recall':>7s} {'index recall':>12s} "
          f"{'numpy MiB':>9s} {'faiss MiB':>9s} {'dense NxN MiB':>13s}")
    for n in sizes:
        x = planted_vectors(n)
        rng = np.random.default_rng(1)
        q = np.sort(rng.choice(n, min(args.queries, n), replace=False))
        with PeakRSS() as mem_np:
            t0 = time.perf_counter()
            ref = brute_force_sample(x, q, t)
            numpy_s = (time.perf_counter() - t0) * n / len(q)
        cfg = SearchConfig(index="ivf", nprobe=args.nprobe)
        with PeakRSS() as mem_fs:
            t0 = time.perf_counter()
            i, j, _, info = near_duplicate_pairs(x, t, cfg)
            ours_s = time.perf_counter() - t0
        qs = set(q.tolist())
        got = {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a in qs or b in qs}
        recall = len(got & ref) / max(1, len(ref))
        rows.append((n, numpy_s, ours_s))
        print(f"{n:8d} {numpy_s:9.1f} {ours_s:10.1f} {numpy_s / ours_s:7.1f}x {recall:7.4f} "
              f"{info['recall'].get('recall_at_threshold') or 0:12.4f} {mem_np.mib:9.0f} {mem_fs.mib:9.0f} "
              f"{n * n * 4 / 2**20:13.0f}")
    if len(rows) >= 2:
        ns = np.log([r[0] for r in rows])
        target = 1_500_000
        for name, col in (("numpy brute force", 1), ("facesift IVF", 2)):
            slope, icpt = np.polyfit(ns, np.log([r[col] for r in rows]), 1)
            print(f"projection to 1.5M: {name:18s} time ~ N^{slope:.2f} -> {np.exp(icpt) * target ** slope / 3600:7.2f} h")
        s1, c1 = np.polyfit(ns, np.log([r[1] for r in rows]), 1)
        s2, c2 = np.polyfit(ns, np.log([r[2] for r in rows]), 1)
        print(f"projected speed-up at 1.5M: {np.exp(c1 - c2) * target ** (s1 - s2):.1f}x "
              f"(dense 1.5M x 1.5M float32 matrix would be {target * target * 4 / 2**40:.1f} TiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", help="backbone.pt for the CNN comparisons (default: random-init resnet18)")
    parser.add_argument("--image-size", type=int, default=112, help="CNN input size (both tools)")
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    parser.add_argument("--queries", type=int, default=5000, help="query rows for the brute-force reference")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--skip", choices=["quality", "scale"], action="append", default=[])
    args = parser.parse_args()
    import logging
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    BENCH.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        if "quality" not in args.skip:
            quality(args, Path(tmp))
        if "scale" not in args.skip:
            scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
