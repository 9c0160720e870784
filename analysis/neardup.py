"""Near-duplicate search with faiss, in memory O(N*k): never an N x N similarity matrix.

Embeddings (L2-normalised, so cosine = inner product):
  * a k-NN graph (k neighbours per row) from `IndexFlatIP` (exact) or, above
    `exact_max` rows, IVF (float16 codes, nprobe tuned on a pilot sample to a target recall,
    similarities re-scored exactly) or HNSW, whose recall against exact search is measured on
    a sample; on GPU faiss when one is present.
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
    exact_sample: tuple | None = None   # (rows, sims, ids) of exact search on the recall sample, if made


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

def ivf_lists(n: int) -> int:
    """IVF list count for n rows: ~3·sqrt(n). A query costs the coarse search over the lists (a
    BLAS product) plus nprobe·n/lists scanned codes, each about 2.7x dearer than a coarse
    comparison (measured on two cores, float16 codes); that sum is least near
    sqrt(2.7·nprobe·n), about 3·sqrt(n) at nprobe 4. At least 39 training points per list."""
    return max(1, min(int(3 * math.sqrt(n)), n // 39 or 1))


COARSE_PROBES = 4   # coarse lists kept per row when the index is built (the pilot's first nprobe)


def build_index(x: np.ndarray, cfg: SearchConfig, seed: int = 0):
    """(cpu_index, search_index, kind, coarse). search_index is the GPU copy when faiss has a GPU.

    IVF stores the vectors as float16 (half the memory of the float32 rows it indexes) and its
    coarse k-means is trained on at most `ivf_train_per_list` points per list for
    `ivf_train_iters` iterations: with 25 iterations on 256 points per list (faiss's defaults)
    the training alone took most of a million-row run on two cores, for lists no better at
    finding near-duplicates. On the CPU the coarse search of every row is made once, for adding
    and for the k-NN search alike (`coarse`: the COARSE_PROBES nearest lists of each row and
    their scores); it is most of the cost the lists add. The similarities an IVF search returns
    are re-scored exactly (`_rescore`), so only *which* neighbours are found is approximate."""
    faiss = _faiss()
    n, d = x.shape
    kind = cfg.index
    if kind == "auto":
        kind = "flat" if n <= cfg.exact_max else "ivf"
    coarse = None
    gpu = _use_gpu(cfg) and kind in ("flat", "ivf")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = min(cfg.nlist or ivf_lists(n), n)
        quantizer = faiss.IndexFlatIP(d)
        if cfg.ivf_storage == "fp16":
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = cfg.ivf_train_iters
        index.cp.seed = seed
        index.cp.max_points_per_centroid = cfg.ivf_train_per_list
        rng = np.random.default_rng(seed)
        m = min(n, cfg.train_max, cfg.ivf_train_per_list * nlist)
        train = x if n <= m else x[np.sort(rng.choice(n, m, replace=False))]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        index.nprobe = min(cfg.nprobe or 1, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, 2 * cfg.k)
    else:
        raise ValueError(f"search.index must be auto, flat, ivf or hnsw, not {cfg.index!r}")
    if kind == "ivf" and not gpu:
        p = min(COARSE_PROBES, index.nlist)
        coarse = (np.empty((n, p), np.float32), np.empty((n, p), np.int64))
        for a in range(0, n, 262144):
            chunk = np.ascontiguousarray(x[a:a + 262144], dtype=np.float32)
            D, I = index.quantizer.search(chunk, p)
            coarse[0][a:a + len(chunk)], coarse[1][a:a + len(chunk)] = D, I
            assign = np.ascontiguousarray(I[:, 0])
            index.add_core(len(chunk), faiss.swig_ptr(chunk), None, faiss.swig_ptr(assign))
    else:
        for a in range(0, n, 262144):
            index.add(np.ascontiguousarray(x[a:a + 262144], dtype=np.float32))
    search_index = index
    if gpu:
        search_index = faiss.index_cpu_to_all_gpus(index)
    return index, search_index, kind, coarse


class _BruteForce:
    """Exact inner-product search over `x` itself (faiss.knn: blocked BLAS, no copy of x), with
    the `search` / `ntotal` of an index so that `_search_knn` can use it."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.ntotal = len(x)

    def search(self, q: np.ndarray, k: int):
        faiss = _faiss()
        return faiss.knn(np.ascontiguousarray(q, dtype=np.float32), self.x, k, metric=faiss.METRIC_INNER_PRODUCT)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(n, min(size, n), replace=False))


def _close_recall(approx_ids: np.ndarray, exact_sims: np.ndarray, exact_ids: np.ndarray, floor: float) -> float:
    """Share of the exact neighbours at/above `floor` that the approximate lists hold."""
    want = found = 0
    for row, e, s in zip(approx_ids, exact_ids, exact_sims):
        close = e[(s >= floor) & (e >= 0)]
        want += len(close)
        found += int(np.isin(close, row).sum())
    return found / want if want else 1.0


def tune_nprobe(index, x: np.ndarray, cfg: SearchConfig, seed: int = 0, base: np.ndarray | None = None,
                offset: int = 0) -> dict:
    """The smallest nprobe (4, 8, 16, ... up to the list count) whose recall, on a sample of
    query rows against exact search, reaches `target_recall` for the close neighbours: those at
    or above the sample's median nearest-neighbour similarity, where duplicates lie whatever the
    threshold turns out to be (it is calibrated later, on this graph). Sets it on `index`.
    `base`: the rows the index holds when they are only a slice of `x` (rows offset.., a part)."""
    n = len(x)
    q = _sample(n, cfg.recall_sample, seed)
    exact = _BruteForce(x if base is None else base)
    es, ei = _search_knn(_Shifted(exact, offset), x, q, cfg.k, cfg.query_block, False)
    floor = float(np.median(es[:, 0])) if len(q) else 1.0
    nlist = index.nlist if hasattr(index, "nlist") else index.getNumLists()   # CPU index or its GPU copy
    tried = {}
    p = 4
    while True:
        p = min(p, nlist)
        _set_nprobe(index, p)
        _, ai = _search_knn(_Shifted(index, offset), x, q, cfg.k, cfg.query_block, False)
        tried[p] = round(_close_recall(ai, es, ei, floor), 4)
        if tried[p] >= cfg.target_recall or p >= nlist:
            break
        p *= 2
    return {"nprobe": p, "pilot_recall": tried, "pilot_floor": round(floor, 4), "pilot_sample": int(len(q)),
            "_exact": (q, es, ei)}


class _Shifted:
    """An index over rows [offset, ...) of a larger set, answering with the larger set's row ids."""

    def __init__(self, index, offset: int = 0):
        self.index, self.offset, self.ntotal = index, offset, index.ntotal

    def search(self, q: np.ndarray, k: int):
        D, I = self.index.search(q, k)
        return D, (np.where(I >= 0, I + self.offset, -1) if self.offset else I)


def _set_nprobe(index, p: int) -> None:
    """nprobe on a CPU IVF index or its GPU copy (which older faiss sets with setNumProbes)."""
    if hasattr(index, "setNumProbes"):
        index.setNumProbes(p)
    else:
        index.nprobe = p


def _rescore(x: np.ndarray, sims: np.ndarray, ids: np.ndarray, block: int = 4096) -> None:
    """Exact float32 inner products for the listed neighbours (in place), each row re-sorted:
    IVF scores against float16 codes, and a pair's similarity must not depend on the index.
    Row r of `sims` / `ids` is row r of `x`; blocks run on threads (matmul releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(a: int) -> None:
        I = ids[a:a + block]
        ok = I >= 0
        S = np.matmul(x[np.where(ok, I, 0)], x[a:a + len(I), :, None])[..., 0]
        S = np.where(ok, S, -np.inf).astype(np.float32)
        order = np.argsort(-S, axis=1, kind="stable")
        sims[a:a + len(I)] = np.take_along_axis(S, order, 1)
        ids[a:a + len(I)] = np.take_along_axis(I, order, 1)
    with ThreadPoolExecutor(max(1, _faiss().omp_get_max_threads())) as pool:
        list(pool.map(one, range(0, len(ids), block)))


def _search_knn(index, x: np.ndarray, rows: np.ndarray, k: int, block: int, progress: bool,
                desc: str = "k-NN", coarse: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest *other* rows for each of `rows` (self removed wherever it appears). `coarse`:
    the rows' IVF lists from `build_index`, searched as they are (their count is the nprobe)."""
    kk = min(k + 1, index.ntotal)
    sims = np.full((len(rows), k), -np.inf, dtype=np.float32)
    ids = np.full((len(rows), k), -1, dtype=np.int64)
    bar = _bar(len(rows), desc, progress)
    for a in range(0, len(rows), block):
        r = rows[a:a + block]
        if coarse is None:
            D, I = index.search(np.ascontiguousarray(x[r], dtype=np.float32), kk)
        else:
            D, I = _preassigned(index, x, r, kk, coarse)
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


def _preassigned(index, x: np.ndarray, rows: np.ndarray, kk: int, coarse: tuple) -> tuple[np.ndarray, np.ndarray]:
    """`search_preassigned` of `rows` on their kept lists, split over threads: faiss runs it on one
    core (its plain `search` is parallel) and releases the GIL."""
    from concurrent.futures import ThreadPoolExecutor
    threads = max(1, min(_faiss().omp_get_max_threads(), len(rows) // 256 or 1))
    cuts = np.linspace(0, len(rows), threads + 1).astype(int)

    def one(a: int, b: int):
        r = rows[a:b]
        return index.search_preassigned(np.ascontiguousarray(x[r], dtype=np.float32), kk,
                                        np.ascontiguousarray(coarse[1][r]), np.ascontiguousarray(coarse[0][r]))
    if threads == 1:
        return one(0, len(rows))
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(one, cuts[:-1], cuts[1:]))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def knn_graph(x: np.ndarray, cfg: SearchConfig, seed: int = 0, progress: bool = True,
              threshold: float | None = None, recall: bool = True) -> tuple[KnnGraph, object]:
    """The k-NN graph of `x` and the CPU index (kept for range searches of saturated rows).
    `recall=False` leaves an approximate graph's recall to the caller (`measure_recall`), for
    when the threshold it should be measured at is only known once the graph exists."""
    n = len(x)
    t0 = time.perf_counter()
    cpu_index, index, kind, coarse = build_index(x, cfg, seed)
    info = {"index": kind, "k": cfg.k, "rows": n, "gpu": index is not cpu_index}
    exact = None
    if kind == "ivf":
        info["nlist"] = int(cpu_index.nlist)
        info["storage"] = cfg.ivf_storage
        if cfg.nprobe is None:
            pilot = tune_nprobe(index, x, cfg, seed)
            exact = pilot.pop("_exact")
            info.update(pilot)
        else:
            info["nprobe"] = min(cfg.nprobe, info["nlist"])
        _set_nprobe(index, info["nprobe"])
        if index is not cpu_index:
            _set_nprobe(cpu_index, info["nprobe"])
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    log.info("%s index over %d rows built in %.1f s%s", kind, n, info["build_seconds"],
             f" (nprobe {info['nprobe']}, pilot recall {info.get('pilot_recall')})" if kind == "ivf" else "")
    if coarse is not None and info["nprobe"] != coarse[0].shape[1]:
        coarse = None     # the pilot asked for more lists than were kept: a fresh coarse search
    sims, ids = _search_knn(index, x, np.arange(n), cfg.k, cfg.query_block, progress, coarse=coarse)
    del coarse
    info["search_seconds"] = round(time.perf_counter() - t0 - info["build_seconds"], 3)
    if kind != "flat":
        _rescore(x, sims, ids)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("k-NN graph of %d rows in %.1f s (search %.1f s)", n, info["seconds"], info["search_seconds"])
    graph = KnnGraph(sims, ids, info, exact)
    if kind != "flat" and recall:
        info["recall"] = measure_recall(x, sims, ids, cfg, seed, threshold, exact)
    return graph, cpu_index


def measure_recall(x: np.ndarray, sims: np.ndarray, ids: np.ndarray, cfg: SearchConfig, seed: int = 0,
                   threshold: float | None = None, exact: tuple | None = None) -> dict:
    """Recall@k of an approximate graph against exact search on a sample of query rows (the
    pilot's sample and its exact neighbours when given: the same rows, searched once)."""
    n = len(x)
    if exact is None:
        q = _sample(n, cfg.recall_sample, seed)
        es, ei = _search_knn(_BruteForce(x), x, q, cfg.k, cfg.query_block, False)
    else:
        q, es, ei = exact
    hits = total = 0
    for row, e in zip(ids[q], ei):
        e = e[e >= 0]
        total += len(e)
        hits += int(np.isin(e, row).sum())
    out = {"sample": int(len(q)), f"recall@{cfg.k}": round(hits / max(total, 1), 4)}
    if threshold is not None:
        # what matters for de-duplication: the exact neighbours at/above the threshold
        want = int(((es >= threshold) & (ei >= 0)).sum())
        out["recall_at_threshold"] = round(_close_recall(ids[q], es, ei, threshold), 4) if want else None
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
    if cpu_index is None:  # a graph merged from parts: no index over all rows, so exact products
        for a in range(0, len(rows), 1024):
            r = rows[a:a + 1024]
            for b in range(0, len(x), 262144):
                sims = x[r] @ x[b:b + 262144].T
                qi, dj = np.nonzero(sims >= threshold)
                out_i.append(r[qi])
                out_j.append(dj.astype(np.int64) + b)
                out_s.append(sims[qi, dj].astype(np.float32))
        how = "brute force"
        s = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
        return np.concatenate(out_i), np.concatenate(out_j), s, how
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
