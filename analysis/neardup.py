"""Near-duplicate search with faiss, in memory O(N*k): never an N x N similarity matrix.

Embeddings (L2-normalised, so cosine = inner product):
  * a k-NN graph (k neighbours per row) from `IndexFlatIP` (exact) or, above
    `exact_max` rows, IVF / HNSW, whose recall against exact search is measured on a sample;
    on GPU faiss when one is present.
  * duplicate pairs at a threshold t: the k-NN entries with similarity >= t, plus, for the
    rows whose k-th neighbour is still >= t ("saturated": a group bigger than k), a
    `range_search` on the CPU index (GPU indexes have none: there k grows instead). With the
    flat index the result equals brute force.

Hashes: Hamming range search on packed 64-bit codes with `IndexBinaryFlat`, or for large N
`IndexBinaryMultiHash` with radius+1 disjoint sub-hashes (by pigeonhole, any pair within the
radius agrees exactly on one of them, so it is still exact). faiss's binary `range_search`
keeps distances strictly below its radius: we pass radius + 1 to mean "<= radius".
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from facesift.analysis.config import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class KnnGraph:
    """k nearest other rows of every row, best first; sims float32, ids int64 (-1 = none)."""
    sims: np.ndarray
    ids: np.ndarray
    info: dict = field(default_factory=dict)


def _faiss():
    import faiss
    return faiss


def _bar(total: int, desc: str, progress: bool):
    from facesift.common.progress import progress as progress_bar
    return progress_bar(total=total, desc=desc, unit="row", disable=not progress, leave=False)


def _use_gpu(cfg: SearchConfig) -> bool:
    faiss = _faiss()
    n_gpu = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if cfg.gpu == "on" and n_gpu == 0:
        raise RuntimeError("search.gpu=on but faiss sees no GPU (install faiss-gpu)")
    return cfg.gpu != "off" and n_gpu > 0


# ---------------------------------------------------------------------------- embeddings

def build_index(x: np.ndarray, cfg: SearchConfig, seed: int = 0):
    """(cpu_index, search_index, kind). search_index is the GPU copy when faiss has a GPU."""
    faiss = _faiss()
    n, d = x.shape
    kind = cfg.index
    if kind == "auto":
        kind = "flat" if n <= cfg.exact_max else "ivf"
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = cfg.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = x if n <= cfg.train_max else x[np.sort(rng.choice(n, cfg.train_max, replace=False))]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        index.nprobe = min(cfg.nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * cfg.k)
    else:
        raise ValueError(f"search.index must be auto, flat, ivf or hnsw, not {cfg.index!r}")
    for a in range(0, n, 262144):
        index.add(np.ascontiguousarray(x[a:a + 262144], dtype=np.float32))
    search_index = index
    if _use_gpu(cfg) and kind in ("flat", "ivf"):
        search_index = faiss.index_cpu_to_all_gpus(index)
    return index, search_index, kind


def _search_knn(index, x: np.ndarray, rows: np.ndarray, k: int, block: int, progress: bool,
                desc: str = "k-NN") -> tuple[np.ndarray, np.ndarray]:
    """k nearest *other* rows for each of `rows` (self removed wherever it appears)."""
    kk = min(k + 1, index.ntotal)
    sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
    ids = np.full((len(rows), k), -1, dtype=np.int64)
    bar = _bar(len(rows), desc, progress)
    for a in range(0, len(rows), block):
        r = rows[a:a + block]
        D, I = index.search(np.ascontiguousarray(x[r], dtype=np.float32), kk)
        is_self = I == r[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")  # self (if any) moves to the end
        D = np.take_along_axis(D, order, 1)[:, :kk - 1] if kk > k else np.take_along_axis(D, order, 1)
        I = np.take_along_axis(I, order, 1)[:, :kk - 1] if kk > k else np.take_along_axis(I, order, 1)
        selfs = np.take_along_axis(is_self, order, 1)[:, :D.shape[1]]
        D = np.where(selfs | (I < 0), -np.inf, D)
        I = np.where(selfs, -1, I)
        m = min(k, D.shape[1])
        sims[a:a + len(r), :m] = D[:, :m]
        ids[a:a + len(r), :m] = I[:, :m]
        bar.update(len(r))
    bar.close()
    return sims, ids


def knn_graph(x: np.ndarray, cfg: SearchConfig, seed: int = 0, progress: bool = True,
              threshold: float | None = None) -> tuple[KnnGraph, object]:
    """The k-NN graph of `x` and the CPU index (kept for range searches of saturated rows)."""
    n = len(x)
    t0 = time.perf_counter()
    cpu_index, index, kind = build_index(x, cfg, seed)
    rows = np.arange(n)
    sims, ids = _search_knn(index, x, rows, cfg.k, cfg.query_block, progress)
    info = {"index": kind, "k": cfg.k, "rows": n, "gpu": index is not cpu_index,
            "seconds": round(time.perf_counter() - t0, 3)}
    if kind != "flat":
        info["recall"] = measure_recall(x, sims, ids, cfg, seed, threshold)
    return KnnGraph(sims, ids, info), cpu_index


def measure_recall(x: np.ndarray, sims: np.ndarray, ids: np.ndarray, cfg: SearchConfig, seed: int = 0,
                   threshold: float | None = None) -> dict:
    """Recall@k of an approximate graph against exact flat search on a sample of query rows."""
    faiss = _faiss()
    n = len(x)
    rng = np.random.default_rng(seed + 1)
    q = np.sort(rng.choice(n, min(cfg.recall_sample, n), replace=False))
    exact = faiss.IndexFlatIP(x.shape[1])
    for a in range(0, n, 262144):
        exact.add(np.ascontiguousarray(x[a:a + 262144], dtype=np.float32))
    es, ei = _search_knn(exact, x, q, cfg.k, cfg.query_block, False)
    hits = total = 0
    for row, e in zip(ids[q], ei):
        e = set(e[e >= 0].tolist())
        total += len(e)
        hits += len(e & set(row[row >= 0].tolist()))
    out = {"sample": int(len(q)), f"recall@{cfg.k}": round(hits / max(total, 1), 4)}
    if threshold is not None:
        # what matters for de-duplication: the exact neighbours at/above the threshold
        want = found = 0
        for row, e, s in zip(ids[q], ei, es):
            close = set(e[(s >= threshold) & (e >= 0)].tolist())
            want += len(close)
            found += len(close & set(row[row >= 0].tolist()))
        out["recall_at_threshold"] = round(found / want, 4) if want else None
        out["pairs_in_sample"] = want
    nn_exact = es[:, 0]
    nn_approx = sims[q, 0]
    out["nn_sim_recovered"] = round(float(np.mean(np.isclose(nn_exact, nn_approx, atol=1e-4))), 4)
    return out


def pairs_at(graph: KnnGraph, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique pairs (i < j) of the k-NN graph with similarity >= threshold."""
    rows, cols = np.nonzero(graph.sims >= threshold)
    i, j, s = rows.astype(np.int64), graph.ids[rows, cols], graph.sims[rows, cols]
    return _unique_pairs(i, j, s)


def saturated_rows(graph: KnnGraph, threshold: float) -> np.ndarray:
    """Rows whose k-th neighbour is still >= threshold: the graph may have cut their list short."""
    if graph.sims.shape[1] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.nonzero(graph.sims[:, -1] >= threshold)[0]


def _unique_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray):
    keep = (j >= 0) & (i != j)
    i, j, s = i[keep], j[keep], s[keep]
    a, b = np.minimum(i, j), np.maximum(i, j)
    if len(a) == 0:
        return a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)
    code = a.astype(np.int64) * (int(b.max()) + 1) + b
    _, first = np.unique(code, return_index=True)
    return a[first].astype(np.int64), b[first].astype(np.int64), s[first].astype(np.float32)


def duplicate_pairs(x: np.ndarray, graph: KnnGraph, cpu_index, threshold: float, cfg: SearchConfig,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """All pairs with cosine >= threshold: k-NN entries plus a complete search of saturated rows."""
    i, j, s = pairs_at(graph, threshold)
    sat = saturated_rows(graph, threshold)
    info = {"threshold": threshold, "saturated_rows": int(len(sat)), "completion": None}
    if len(sat):
        extra_i, extra_j, extra_s, how = _complete_rows(x, cpu_index, sat, threshold, cfg, progress)
        info["completion"] = how
        i, j, s = _unique_pairs(np.concatenate([i, extra_i]), np.concatenate([j, extra_j]),
                                np.concatenate([s, extra_s]))
    if len(i) > cfg.max_pairs:
        raise RuntimeError(f"{len(i)} pairs at threshold {threshold}: far too low a threshold")
    info["pairs"] = int(len(i))
    return i, j, s, info


def _complete_rows(x, cpu_index, rows: np.ndarray, threshold: float, cfg: SearchConfig, progress: bool):
    """Every neighbour >= threshold of `rows`: range_search on CPU indexes, growing k otherwise."""
    # faiss keeps inner products strictly above the radius; nudge it down one float step so
    # ">= threshold" means what it says.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    out_i, out_j, out_s = [], [], []
    try:
        for a in range(0, len(rows), cfg.query_block):
            r = rows[a:a + cfg.query_block]
            lims, D, I = cpu_index.range_search(np.ascontiguousarray(x[r], dtype=np.float32), radius)
            counts = np.diff(lims).astype(np.int64)
            out_i.append(np.repeat(r, counts))
            out_j.append(I.astype(np.int64))
            out_s.append(D.astype(np.float32))
        how = "range_search"
    except RuntimeError:  # index types without range_search
        out_i, out_j, out_s = [], [], []
        k = cfg.k
        pending = rows
        while len(pending) and k < 4096:
            k *= 4
            sims, ids = _search_knn(cpu_index, x, pending, k, cfg.query_block, progress, "k-NN (grow)")
            keep = sims >= threshold
            out_i.append(np.repeat(pending, keep.sum(1)))
            out_j.append(ids[keep])
            out_s.append(sims[keep])
            pending = pending[sims[:, -1] >= threshold]
        how = f"knn k={k}" + (f" ({len(pending)} rows still saturated)" if len(pending) else "")
    s = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
    keep = s >= threshold
    i = np.concatenate(out_i)[keep] if out_i else np.zeros(0, np.int64)
    j = np.concatenate(out_j)[keep] if out_j else np.zeros(0, np.int64)
    return i, j, s[keep], how


def near_duplicate_pairs(x: np.ndarray, threshold: float, cfg: SearchConfig | None = None,
                         progress: bool = False, seed: int = 0):
    """Convenience: (i, j, sim, info) of all pairs i < j with cosine >= threshold."""
    cfg = cfg or SearchConfig()
    graph, cpu_index = knn_graph(x, cfg, seed, progress, threshold)
    i, j, s, info = duplicate_pairs(x, graph, cpu_index, threshold, cfg, progress)
    return i, j, s, {**graph.info, **info}


def brute_force_pairs(x: np.ndarray, threshold: float, block: int = 4096):
    """NumPy blocked reference: all pairs i < j with x_i . x_j >= threshold."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out_i, out_j, out_s = [], [], []
    for a in range(0, len(x), block):
        sims = x[a:a + block] @ x.T
        r, c = np.nonzero(sims >= threshold)
        r = r + a
        keep = c > r
        out_i.append(r[keep])
        out_j.append(c[keep])
        out_s.append(sims[r[keep] - a, c[keep]])
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_s).astype(np.float32))


# ---------------------------------------------------------------------------- hashes

def hamming_pairs(codes: np.ndarray, radius: int, method: str = "auto", flat_max: int = 200_000,
                  block: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j of packed binary codes with Hamming distance <= radius (exact)."""
    faiss = _faiss()
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    n, nbytes = codes.shape
    bits = nbytes * 8
    if method == "auto":
        method = "flat" if n <= flat_max or radius + 1 > bits // 4 else "multihash"
    if method == "flat":
        index = faiss.IndexBinaryFlat(bits)
    elif method == "multihash":
        nhash = radius + 1
        index = faiss.IndexBinaryMultiHash(bits, nhash, bits // nhash)
    else:
        raise ValueError(f"hamming method must be auto, flat or multihash, not {method!r}")
    index.add(codes)
    out_i, out_j, out_d = [], [], []
    for a in range(0, n, block):
        q = codes[a:a + block]
        lims, D, I = index.range_search(q, radius + 1)   # strict '<' in faiss: +1 means '<= radius'
        rows = np.repeat(np.arange(a, a + len(q)), np.diff(lims).astype(np.int64))
        keep = I > rows
        out_i.append(rows[keep])
        out_j.append(I[keep].astype(np.int64))
        out_d.append(D[keep].astype(np.int32))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
