"""The k-NN graph in parts: for datasets whose index does not fit one machine (the path to 100M rows).

Part p of P indexes only the rows of its slice and searches *every* row against them; the graph
is the top-k merge of the P partial lists (`faiss.ResultHeap`). With a flat index per part the
merged graph is exactly the one-index graph; with IVF it is what IVF finds in each slice (the
pilot tunes nprobe per part). A part's index holds N/P rows, so P bounds the index memory, and
the parts are independent: `facesift redundancy --part p/P` runs one anywhere (another machine,
a GPU with faiss-gpu), and the run without `--part` merges what is there and searches what is
missing. Each part is written atomically to `knn-parts/part-p-of-P.npz` with a fingerprint of
the vectors and search settings, so a part made from other embeddings or settings is refused,
and a stopped run resumes at the first missing part.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from facesift.analysis import neardup
from facesift.analysis.config import SearchConfig
from facesift.common.atomic import atomic_write

log = logging.getLogger(__name__)

PARTS_DIR = "knn-parts"


class PartMismatch(ValueError):
    """A part file made from other vectors or other search settings."""


def part_slice(n: int, part: int, parts: int) -> tuple[int, int]:
    """Rows [a, b) that part `part` of `parts` indexes (contiguous, sizes differ by at most one)."""
    return n * part // parts, n * (part + 1) // parts


def fingerprint(x: np.ndarray, cfg: SearchConfig, seed: int) -> dict:
    """What a part's graph depends on: the vectors (a digest of every 1000th row and the shape)
    and the settings that change which neighbours are found."""
    step = max(1, len(x) // 1000)
    digest = hashlib.sha1(np.ascontiguousarray(x[::step]).tobytes()).hexdigest()[:16]
    keep = ("k", "exact_max", "index", "nlist", "nprobe", "target_recall", "ivf_storage", "hnsw_m", "parts")
    return {"rows": int(len(x)), "dim": int(x.shape[1]), "digest": digest, "seed": seed,
            **{k: v for k, v in asdict(cfg).items() if k in keep}}


def search_part(x: np.ndarray, part: int, parts: int, cfg: SearchConfig, seed: int = 0,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every row's k nearest rows among part `part`'s slice: (sims, global ids, info)."""
    t0 = time.perf_counter()
    a, b = part_slice(len(x), part, parts)
    cpu_index, index, kind, _ = neardup.build_index(x[a:b], cfg, seed + part)
    info = {"part": part, "rows": [a, b], "index": kind}
    if kind == "ivf":
        info["nlist"] = int(cpu_index.nlist)
        if cfg.nprobe is None:
            pilot = neardup.tune_nprobe(index, x, cfg, seed, base=x[a:b], offset=a)
            pilot.pop("_exact")
            info.update(pilot)
        else:
            info["nprobe"] = min(cfg.nprobe, info["nlist"])
        neardup._set_nprobe(index, info["nprobe"])
    sims, ids = neardup._search_knn(neardup._Shifted(index, a), x, np.arange(len(x)), cfg.k, cfg.query_block, progress,
                                    f"k-NN part {part + 1}/{parts}")
    if kind != "flat":
        neardup._rescore(x, sims, ids)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    return sims, ids, info


def part_path(out: Path, part: int, parts: int) -> Path:
    return Path(out) / PARTS_DIR / f"part-{part}-of-{parts}.npz"


def save_part(out: Path, part: int, parts: int, sims: np.ndarray, ids: np.ndarray, info: dict, fp: dict) -> Path:
    path = part_path(out, part, parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = np.frombuffer(json.dumps({"fingerprint": fp, "info": info}).encode(), np.uint8)
    with atomic_write(path) as fh:
        np.savez(fh, sims=sims, ids=ids, meta=meta)
    return path


def load_part(path: Path, fp: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(sims, ids, info) of a part file; PartMismatch when it was made from other vectors or settings."""
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            sims, ids = z["sims"], z["ids"]
    except (OSError, ValueError, KeyError) as exc:
        raise PartMismatch(f"{path}: not a readable k-NN part ({exc}); delete it to search that part again") from None
    if meta.get("fingerprint") != fp:
        theirs = meta.get("fingerprint") or {}
        differs = sorted(k for k in set(fp) | set(theirs) if fp.get(k) != theirs.get(k))
        raise PartMismatch(f"{path} was made from other embeddings or search settings ({', '.join(differs)} "
                           f"differ); delete {path.parent} to search again")
    if sims.shape != (fp["rows"], fp["k"]) or ids.shape != sims.shape:
        raise PartMismatch(f"{path}: shape {sims.shape}, expected ({fp['rows']}, {fp['k']})")
    return sims, ids, meta["info"]


def merge(results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (largest similarity) merge of partial k-NN lists over the same query rows."""
    import faiss
    n = len(results[0][0])
    heap = faiss.ResultHeap(n, k, keep_max=True)
    for sims, ids in results:
        heap.add_result(np.ascontiguousarray(sims, np.float32), np.ascontiguousarray(ids, np.int64))
    heap.finalize()
    sims = heap.D.astype(np.float32)
    sims[heap.I < 0] = -np.inf
    return sims, heap.I.astype(np.int64)


def graph_from_parts(x: np.ndarray, cfg: SearchConfig, seed: int, out: Path,
                     progress: bool = True) -> neardup.KnnGraph:
    """The merged graph: parts already on disk are read (and checked), missing ones searched here
    and saved as they finish, so a stopped run resumes."""
    t0 = time.perf_counter()
    fp = fingerprint(x, cfg, seed)
    results, infos, searched = [], [], 0
    for part in range(cfg.parts):
        path = part_path(out, part, cfg.parts)
        if path.exists():
            sims, ids, info = load_part(path, fp)
        else:
            sims, ids, info = search_part(x, part, cfg.parts, cfg, seed, progress)
            save_part(out, part, cfg.parts, sims, ids, info, fp)
            searched += 1
        results.append((sims, ids))
        infos.append(info)
    sims, ids = merge(results, cfg.k)
    kinds = sorted({i["index"] for i in infos})
    info = {"index": "+".join(kinds), "k": cfg.k, "rows": len(x), "gpu": False, "parts": cfg.parts,
            "parts_searched_here": searched, "part_info": infos, "seconds": round(time.perf_counter() - t0, 3)}
    log.info("k-NN graph from %d parts (%d searched here, %d read) in %.1f s", cfg.parts, searched,
             cfg.parts - searched, info["seconds"])
    return neardup.KnnGraph(sims, ids, info)
