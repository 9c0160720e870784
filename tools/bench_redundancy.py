#!/usr/bin/env python
"""Benchmark `facesift redundancy` against imagededup (quality + speed) and NumPy (scale).

    .venv/bin/python tools/bench_redundancy.py [--backbone ckpt/backbone.pt] [--sizes 200000,1500000] [--skip quality|scale]

1. The known sets the tests use (`analysis.dupset`), stored as `curate --detector none` stores
   photos: the issue #13 near-duplicate set (1,000 face crops, 567 copies) and the
   hard-negative set (Yale frames, the photos' faces, held-out copies). On the same images, in
   one run: facesift at its defaults (calibrated threshold, verified pairs) and with
   `--no-verify`, imagededup PHash (default Hamming 10) and imagededup CNN (default cosine 0.9)
   — pair precision / recall / F1, hard-negative pairs merged, encode and search time, peak
   memory. imagededup's CNN ships no weights and downloads MobileNetV3's, which this machine
   cannot: it gets the `--backbone` (or a random-init resnet18) through `CustomModel`.
   imagededup runs in its own virtualenv (.bench/imagededup, created here; it reuses .venv's
   torch through a .pth file and installs imagededup + PyWavelets without dependencies).
2. Scale: near-duplicate pairs among N x 256 vectors with planted duplicates, facesift at its
   search defaults (exact up to `exact_max`, above it IVF with float16 codes and nprobe tuned
   on a pilot) vs a NumPy blocked brute force (BLAS matmul), up to 1.5M rows (the paper's
   Flickr-Face size); the brute force is timed on a fixed sample of query rows and scaled by
   N / sample (its cost is exactly linear in the number of queries), pair recall is measured
   on the same rows; the process's peak resident memory.
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

IMAGEDEDUP_SCRIPT = r"""
import json, sys, threading, time
import psutil, torch
from imagededup.methods import PHash, CNN
from imagededup.utils import CustomModel
sys.path.insert(0, sys.argv[4])
from facesift.pretrain.backbone import load_backbone
image_dir, backbone, out, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
torch.set_num_threads(2)

class Peak:
    # peak RSS above the level at entry, sampled every 5 ms
    def __enter__(self):
        self.p = psutil.Process(); self.base = self.peak = self.p.memory_info().rss; self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True); self.t.start(); return self
    def run(self):
        while not self.stop:
            self.peak = max(self.peak, self.p.memory_info().rss); time.sleep(0.005)
    def __exit__(self, *a):
        self.stop = True; self.t.join(); self.mib = (max(self.peak, self.p.memory_info().rss) - self.base) / 2**20

res = {}
ph = PHash(verbose=False)
with Peak() as m:
    t = time.perf_counter(); enc = ph.encode_images(image_dir=image_dir); res["phash_encode_s"] = time.perf_counter() - t
    t = time.perf_counter(); res["phash_default"] = ph.find_duplicates(encoding_map=enc, max_distance_threshold=10)
    res["phash_search_s"] = time.perf_counter() - t
res["phash_mib"] = m.mib
res["phash_sweep"] = {d: ph.find_duplicates(encoding_map=enc, max_distance_threshold=d) for d in (2, 4, 6, 8, 12)}
import torchvision.transforms as T
model = load_backbone(backbone).eval()
transform = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
with Peak() as m:
    t = time.perf_counter()
    cnn = CNN(verbose=False, model_config=CustomModel(name="facesift-backbone", model=model, transform=transform))
    enc = cnn.encode_images(image_dir=image_dir, num_enc_workers=0); res["cnn_encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    res["cnn_default"] = cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=0.9, num_sim_workers=1)
    res["cnn_search_s"] = time.perf_counter() - t
res["cnn_mib"] = m.mib
res["cnn_sweep"] = {s: cnn.find_duplicates(encoding_map=enc, min_similarity_threshold=s, num_sim_workers=1)
                    for s in (0.8, 0.85, 0.95, 0.97, 0.98, 0.99, 0.995)}
json.dump(res, open(out, "w"))
"""


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
    return path, ("random-init resnet18 (no --backbone given; imagededup's own CNN, MobileNetV3 with ImageNet "
                  "weights, needs a download that this machine cannot make)")


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


def implied_pairs(out: Path, row: dict[str, int]) -> set[tuple[int, int]]:
    pairs = set()
    for line in (out / "groups.jsonl").read_text().splitlines():
        members = sorted(row[k] for k in json.loads(line)["members"])
        pairs |= {(a, b) for n, a in enumerate(members) for b in members[n + 1:]}
    return pairs


def quality(args, work: Path) -> None:
    """Both known sets; facesift at its defaults next to imagededup PHash and CNN on the same files."""
    from facesift.analysis.config import EmbedConfig, RedundancyConfig, VerifyConfig
    from facesift.analysis.dupset import hard_negative_items, hard_negative_pairs, neardup_items, score, truth_pairs
    from facesift.knownsets import SHARD_NAME, photo_faces, store_known_set
    from facesift.analysis.embed import embed_shards, load_embeddings
    from facesift.analysis.redundancy import run_redundancy
    import webdataset as wds

    backbone, backbone_note = backbone_path(args.backbone, work)
    py = imagededup_python()
    script = work / "run_imagededup.py"
    script.write_text(IMAGEDEDUP_SCRIPT)
    sets = {"near-duplicates (issue #13)": lambda: neardup_items(SHARED),
            "hard negatives (Yale, photos, held-out edits)": lambda: hard_negative_items(SHARED, photo_faces(SHARED))}
    print(f"imagededup CNN model: {backbone_note}, at {args.image_size} px", flush=True)
    for n_set, (name, make) in enumerate(sets.items()):
        root = work / f"set{n_set}"
        items = make()
        shards, families = store_known_set(items, root)
        image_dir = root / "images"
        image_dir.mkdir(parents=True)
        for s in wds.WebDataset(str(shards / SHARD_NAME), shardshuffle=False, empty_check=False):
            (image_dir / f"{s['__key__']}.jpg").write_bytes(s["jpg"])
        with PeakRSS() as mem_embed:
            t = time.perf_counter()
            embed_shards(shards, root / "emb", EmbedConfig(), progress=False)
            embed_s = time.perf_counter() - t
        data = load_embeddings(root / "emb")
        keys = data["keys"]
        row = {k: i for i, k in enumerate(keys)}
        truth = truth_pairs(families, keys)
        negatives = hard_negative_pairs(keys, families, data["meta"])
        print(f"\n{name}: {len(keys)} images, {len(truth)} true pairs, {len(negatives)} hard-negative pairs "
              f"(same subject / same photo, not copies)", flush=True)
        rows = []
        for label, cfg in (("facesift (defaults)", RedundancyConfig()),
                           ("facesift --no-verify", RedundancyConfig(verify=VerifyConfig(enabled=False)))):
            out = root / f"red-{len(rows)}"
            with PeakRSS() as mem:
                t = time.perf_counter()
                summary = run_redundancy(root / "emb", out, cfg, progress=False)
                red_s = time.perf_counter() - t
            found = implied_pairs(out, row)
            ver = summary["verification"]
            setting = (f"cos>={summary['threshold']:.3f}" + (f" ver>={ver['threshold']:.3f}" if ver.get("enabled")
                                                              else ""))
            rows.append((label, setting, score(found, truth), len(found & negatives), embed_s, red_s,
                         max(mem_embed.mib, mem.mib),
                         f"k-NN {summary['search']['seconds']:.1f} s, calibration "
                         f"{summary['calibration'].get('seconds', 0):.1f} s, verification {ver.get('seconds', 0):.1f} s"))
        r = subprocess.run([str(py), str(script), str(image_dir), str(backbone), str(root / "imagededup.json"),
                            str(package_parent()), str(args.image_size)], capture_output=True, text=True)
        if r.returncode:
            print("imagededup failed:\n" + r.stderr[-3000:])
        else:
            res = json.loads((root / "imagededup.json").read_text())
            for label, key, setting, sweep in (("imagededup PHash", "phash", "ham<=10", "phash_sweep"),
                                               ("imagededup CNN", "cnn", "cos>=0.9", "cnn_sweep")):
                found = pairs_of(res[f"{key}_default"], row)
                best = max(((k, score(pairs_of(v, row), truth)) for k, v in res[sweep].items()),
                           key=lambda kv: kv[1]["f1"])
                rows.append((label, setting, score(found, truth), len(found & negatives), res[f"{key}_encode_s"],
                             res[f"{key}_search_s"], res[f"{key}_mib"],
                             f"best of its sweep (oracle): {best[0]} F1 {best[1]['f1']:.3f}"))
        print(f"{'method':22s} {'setting':24s} {'P':>6s} {'R':>6s} {'F1':>6s} {'hard neg':>8s} {'encode s':>8s} "
              f"{'search s':>8s} {'peak MiB':>8s}  notes")
        for label, setting, sc, hn, enc_s, search_s, mib, note in rows:
            print(f"{label:22s} {setting:24s} {sc['precision']:6.3f} {sc['recall']:6.3f} {sc['f1']:6.3f} {hn:8d} "
                  f"{enc_s:8.1f} {search_s:8.1f} {mib:8.0f}  {note}", flush=True)
    print("\nfacesift pairs are those its groups imply (a chain A~B~C counts A~C); imagededup's are its "
          "duplicate lists. 'search s' is facesift's whole redundancy stage (k-NN search, calibration, "
          "verification, groups, report), imagededup's find_duplicates; 'encode s' embedding / hashing.")


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


def brute_force_sample(x: np.ndarray, q: np.ndarray, t: float, block: int = 256) -> set[tuple[int, int]]:
    """Every pair (i < j) with cosine >= t that has a row of `q` in it (block x N products: 1.5 GB at 1.5M)."""
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
    """facesift's search at its defaults (`index=auto`: exact up to `exact_max` rows, then IVF with
    float16 codes and nprobe tuned on a pilot) against NumPy brute force on the same vectors."""
    from facesift.analysis.config import SearchConfig
    from facesift.analysis.neardup import near_duplicate_pairs
    sizes = [int(s) for s in args.sizes.split(",")]
    t = 0.9
    print(f"\nscale: N x 256 clustered vectors, 2% planted near-duplicates, threshold cos >= {t}; "
          f"NumPy brute force timed on {args.queries} query rows and scaled by N/{args.queries}; "
          f"facesift at its search defaults{f' with nprobe {args.nprobe}' if args.nprobe else ''}")
    print(f"{'N':>9s} {'index':>22s} {'numpy s':>9s} {'facesift s':>10s} {'speed-up':>8s} {'pair recall':>11s} "
          f"{'recall@k':>8s} {'peak GiB':>8s} {'numpy GiB':>9s}  notes")
    for n in sizes:
        x = planted_vectors(n)
        rng = np.random.default_rng(1)
        q = np.sort(rng.choice(n, min(args.queries, n), replace=False))
        with PeakRSS() as mem_np:
            t0 = time.perf_counter()
            ref = brute_force_sample(x, q, t)
            numpy_s = (time.perf_counter() - t0) * n / len(q)
        cfg = SearchConfig(nprobe=args.nprobe)
        with PeakRSS() as mem_fs:
            t0 = time.perf_counter()
            i, j, _, info = near_duplicate_pairs(x, t, cfg)
            ours_s = time.perf_counter() - t0
        qs = set(q.tolist())
        got = {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a in qs or b in qs}
        recall = len(got & ref) / max(1, len(ref))
        kind = info["index"] + (f" {info['nlist']} lists p{info['nprobe']}" if info["index"] == "ivf" else " (exact)")
        rec_k = (info.get("recall") or {}).get(f"recall@{cfg.k}", 1.0)
        notes = (f"build+pilot {info['build_seconds']:.0f} s, pilot recall {info.get('pilot_recall')}"
                 if info["index"] == "ivf" else "")
        print(f"{n:9d} {kind:>22s} {numpy_s:9.1f} {ours_s:10.1f} {numpy_s / ours_s:7.1f}x {recall:11.4f} {rec_k:8.4f} "
              f"{mem_fs.peak / 2**30:8.2f} {mem_np.peak / 2**30:9.2f}  {notes}", flush=True)
        del x
    print("pair recall: brute-force pairs of the sampled rows that facesift found (goal >= 0.99); peak GiB: "
          "the whole process's peak resident memory during the search, the N x 256 float32 vectors included "
          "(goal <= 4 at 1.5M). A dense 1.5M x 1.5M float32 matrix would be 8.2 TiB.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", help="backbone.pt for imagededup's CNN (default: random-init resnet18)")
    parser.add_argument("--image-size", type=int, default=112, help="CNN input size (both tools)")
    parser.add_argument("--sizes", default="200000,1500000", help="rows for the scale part")
    parser.add_argument("--queries", type=int, default=5000, help="query rows for the brute-force reference")
    parser.add_argument("--nprobe", type=int, help="fixed IVF nprobe (default: tuned on a pilot, as facesift does)")
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
