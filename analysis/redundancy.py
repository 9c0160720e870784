"""The `redundancy` stage end to end: embeddings in, groups / keep lists / measures / report out.

Steps: load (memmap) -> optional mean-centring -> k-NN graph (faiss) -> thresholds calibrated
on known copies of a sample of the dataset's own images, unless given (`analysis.thresholds`)
-> exact pairs at the threshold (and/or Hamming pairs of the hashes) -> candidate pairs verified
on aligned thumbnails -> groups (components or SemDeDup) -> keep lists -> sweep, k-means
clusters, NN similarities, breakdowns -> summary.json + report.html. Every output is written
atomically; re-running recomputes the same files (the calibration sample is seeded).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facesift.analysis.config import RedundancyConfig
from facesift.analysis.embed import EmbedError, load_embeddings
from facesift.analysis import groups as grouping, knn_parts, measures, neardup, report, thresholds
from facesift.analysis.calibrate import CalibrationError
from facesift.analysis.rowimages import RowImagesUnavailable
from facesift.common.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def dataset_mean(emb: np.ndarray, valid: np.ndarray, block: int = 262144) -> np.ndarray:
    """Mean of the valid rows (float64, blockwise over the memmap)."""
    mean = np.zeros(emb.shape[1], dtype=np.float64)
    for a in range(0, len(emb), block):
        mean += emb[a:a + block][valid[a:a + block]].astype(np.float64).sum(0)
    return mean / max(1, int(valid.sum()))


def prepare_vectors(emb: np.ndarray, valid: np.ndarray, center: bool, block: int = 262144,
                    mean: np.ndarray | None = None) -> np.ndarray:
    """float32 copy, optionally minus the mean of valid rows (or the given `mean`), re-normalised;
    invalid rows zero."""
    x = np.zeros(emb.shape, dtype=np.float32)
    if not center:
        mean = np.zeros(emb.shape[1], dtype=np.float64)
    elif mean is None:
        mean = dataset_mean(emb, valid, block)
    for a in range(0, len(emb), block):
        chunk = emb[a:a + block].astype(np.float32) - mean.astype(np.float32)
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        chunk = np.divide(chunk, norms, out=np.zeros_like(chunk), where=norms > 0)
        chunk[~valid[a:a + block]] = 0
        x[a:a + block] = chunk
    return x


def _vectors(emb_dir: str | Path, cfg: RedundancyConfig):
    """(data, valid rows, their search vectors, the mean taken off, search config) of an embed folder."""
    data = load_embeddings(emb_dir)
    n = len(data["keys"])
    valid = np.array(["error" not in m for m in data["meta"]], dtype=bool)
    if valid.sum() < 2:
        raise EmbedError(f"redundancy needs at least 2 decodable images; {emb_dir} has {int(valid.sum())}")
    if "hash" in cfg.by and data["hashes"] is None:
        raise EmbedError(f"{emb_dir}: no hashes.npy (embed was run with hashes off)")
    mean = dataset_mean(data["emb"], valid) if cfg.center else None
    x = prepare_vectors(data["emb"], valid, cfg.center, mean=mean)
    vrows = np.nonzero(valid)[0]
    xv = x if len(vrows) == n else x[vrows]    # no second N x D copy in the usual case
    scfg = cfg.search
    if scfg.k >= len(vrows):
        scfg = replace(scfg, k=len(vrows) - 1)
    return data, vrows, xv, mean, scfg


def _parts_on_disk(out: Path, scfg):
    """A run without `search.parts` merges the parts that `--part K/N` runs left in `out`."""
    if scfg.parts > 1:
        return scfg
    counts = {int(p.stem.rsplit("-of-", 1)[1]) for p in (out / knn_parts.PARTS_DIR).glob("part-*-of-*.npz")}
    if len(counts) > 1:
        raise EmbedError(f"{out / knn_parts.PARTS_DIR} holds parts of different splits ({sorted(counts)}): "
                         "delete the ones you do not want")
    if counts:
        log.info("merging the k-NN parts in %s (search.parts=%d)", out / knn_parts.PARTS_DIR, min(counts))
        return replace(scfg, parts=counts.pop())
    return scfg


def run_part(emb_dir: str | Path, out: str | Path, cfg: RedundancyConfig, part: int, parts: int,
             progress: bool = True) -> dict:
    """`--part K/N`: search every row against slice K of N and save it for the merging run."""
    try:
        cfg.check()
    except ValueError as exc:
        raise EmbedError(str(exc)) from None
    _, _, xv, _, scfg = _vectors(emb_dir, cfg)
    scfg = replace(scfg, parts=parts)
    sims, ids, info = knn_parts.search_part(xv, part, parts, scfg, cfg.seed, progress)
    path = knn_parts.save_part(Path(out), part, parts, sims, ids, info, knn_parts.fingerprint(xv, scfg, cfg.seed))
    return {**info, "path": str(path), "parts": parts}


def run_redundancy(emb_dir: str | Path, out: str | Path, cfg: RedundancyConfig, progress: bool = True) -> dict:
    """The stage end to end (see the module docstring). Bad options are a ValueError and an
    unusable embed folder an EmbedError, both raised before anything is written."""
    try:
        cfg.check()
    except ValueError as exc:
        raise EmbedError(str(exc)) from None
    t0 = time.perf_counter()
    data, vrows, xv, mean, scfg = _vectors(emb_dir, cfg)
    keys, meta, info = data["keys"], data["meta"], data["info"]
    n = len(keys)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scfg = _parts_on_disk(out, scfg)
    if scfg.parts > 1:
        try:
            graph = knn_parts.graph_from_parts(xv, scfg, cfg.seed, out, progress)
        except knn_parts.PartMismatch as exc:
            raise EmbedError(str(exc)) from None
        cpu_index = None   # saturated rows are completed by exact products
    else:
        graph, cpu_index = neardup.knn_graph(xv, scfg, cfg.seed, progress, recall=False)
    log.info("k-NN graph: %s", graph.info)
    nn_all = graph.sims[:, 0] if graph.sims.shape[1] else np.zeros(len(vrows), np.float32)
    timings = {"knn": round(time.perf_counter() - t0, 3)}

    verify = thresholds.verifies(cfg)
    try:
        calib = thresholds.calibrate_run(info, vrows, xv, mean, graph.sims, data["hashes"], cfg,
                                         count_pairs=lambda t: len(neardup.pairs_at(graph, t)[0]))
    except (CalibrationError, RowImagesUnavailable) as exc:
        if cfg.threshold is None or ("hash" in cfg.by and cfg.hamming is None):
            raise EmbedError(thresholds.explain_unavailable(exc)) from None
        # every threshold was given: only the verification needed the images
        log.warning("%s: candidate pairs are not verified", exc)
        verify = False
        calib = thresholds.Calibration(threshold=cfg.threshold, hamming=cfg.hamming,
                                       summary={"skipped": str(exc), "verified": False})
    threshold, hamming = calib.threshold, calib.hamming
    timings["calibration"] = round(time.perf_counter() - t0, 3)
    if graph.info["index"] != "flat":
        graph.info["recall"] = neardup.measure_recall(xv, graph.sims, graph.ids, scfg, cfg.seed, threshold,
                                                       graph.exact_sample)
    ei, ej, es, pinfo = neardup.duplicate_pairs(xv, graph, cpu_index, threshold, scfg, progress)
    timings["pairs"] = round(time.perf_counter() - t0, 3)

    hash_info = {}
    hash_pairs = {}
    if "hash" in cfg.by:
        for kind, sl in (("phash", slice(0, 8)), ("dhash", slice(8, 16))):
            if kind not in cfg.by:
                continue
            codes = np.ascontiguousarray(data["hashes"][vrows][:, sl])
            hi, hj, hd = neardup.hamming_pairs(codes, hamming)
            hash_pairs[kind] = (hi, hj)
            hash_info[kind] = {"radius": hamming, "pairs": int(len(hi))}

    # pairs that define duplicates (indices into valid rows)
    if cfg.by == "emb":
        pi, pj = ei, ej
    elif cfg.by in ("phash", "dhash"):
        pi, pj = hash_pairs[cfg.by]
    else:
        pi = np.concatenate([ei, hash_pairs["phash"][0]])
        pj = np.concatenate([ej, hash_pairs["phash"][1]])
        pi, pj, _ = neardup._unique_pairs(pi, pj, np.zeros(len(pi), np.float32))
    candidates = int(len(pi))
    verification: dict = {"enabled": False, "reason": "off" if not cfg.verify.enabled else
                          "semdedup groups are not pairs" if cfg.grouping != "components" else "images unavailable"}
    if verify:
        try:
            keep_pair, verification = thresholds.verify_candidates(info, vrows, pi, pj, calib, cfg)
        except (CalibrationError, RowImagesUnavailable) as exc:
            raise EmbedError(thresholds.explain_unavailable(exc)) from None
        pi, pj = pi[keep_pair], pj[keep_pair]
    timings["verification"] = round(time.perf_counter() - t0, 3)
    vkeys = [keys[r] for r in vrows]

    k = cfg.clusters or measures.default_clusters(len(vrows))
    labels, csims, centroids = measures.spherical_kmeans(xv, k, cfg.kmeans_iters, cfg.seed, scfg.train_max,
                                                         gpu=graph.info.get("gpu", False), redo=cfg.kmeans_redo)
    if cfg.grouping == "semdedup":
        groups = grouping.semdedup_groups(xv, labels, centroids, vkeys, threshold, cfg.keep, cfg.seed)
    else:
        groups = grouping.groups_from_pairs(xv, pi, pj, vkeys, cfg.keep, cfg.seed)
    timings["groups"] = round(time.perf_counter() - t0, 3)

    # back to row numbers of the full table
    groups = [{"rows": vrows[g["rows"]].tolist(), "keep": int(vrows[g["keep"]])} for g in groups]
    duplicate_rows = {r for g in groups for r in g["rows"] if r != g["keep"]}
    keep_keys = [keys[r] for r in vrows if r not in duplicate_rows]
    dup_keys = [keys[r] for r in sorted(duplicate_rows)]

    sweep = measures.sweep(len(vrows), list(cfg.sweep), (ei, ej, es), threshold,
                           lambda t: neardup.pairs_at(graph, t), lambda t: neardup.saturated_rows(graph, t))
    rng = np.random.default_rng(cfg.seed)
    nn_sample = nn_all if len(nn_all) <= cfg.nn_sample else nn_all[rng.choice(len(nn_all), cfg.nn_sample, replace=False)]
    cstats = measures.cluster_stats(labels, k)
    full_pairs = (vrows[pi], vrows[pj])
    breakdowns = {f: measures.breakdown(meta, f, duplicate_rows, full_pairs, cfg.top_owners)
                  for f in ("owner", "query", "source")}
    dedup = measures.dedup_counts(len(vrows), pi, pj) if cfg.grouping == "components" else {}
    summary = {
        "rows": n, "valid": int(len(vrows)), "errors": int(n - len(vrows)),
        "embedder": info.get("embedder", "?"), "by": cfg.by, "threshold": threshold,
        "threshold_source": "given" if cfg.threshold is not None else "calibrated",
        "hamming": hamming, "hamming_source": (None if hamming is None else "given" if cfg.hamming is not None
                                               else "calibrated"),
        "grouping": cfg.grouping, "keep": cfg.keep, "center": cfg.center,
        "candidate_pairs": candidates, "pairs": int(len(pi)), "groups": len(groups),
        "rows_in_groups": int(sum(len(g["rows"]) for g in groups)),
        "duplicates": len(dup_keys), "kept": len(keep_keys),
        "unique_fraction": len(keep_keys) / len(vrows), "duplicate_rate": len(dup_keys) / len(vrows),
        "largest_group": max((len(g["rows"]) for g in groups), default=0),
        "effective_size": len(keep_keys),
        "clusters": {k2: v for k2, v in cstats.items() if k2 != "sizes"},
        "nn_similarity": measures.nn_stats(nn_sample),
        "search": {**graph.info, **pinfo}, "hash_pairs": hash_info,
        "sweep": sweep, "breakdowns": breakdowns, "components": dedup,
        "calibration": calib.summary, "verification": verification,
    }

    # outputs
    atomic_write_text(out / "keep.txt", "".join(k2 + "\n" for k2 in keep_keys))
    atomic_write_text(out / "duplicates.txt", "".join(k2 + "\n" for k2 in dup_keys))
    lines = []
    for g_id, g in enumerate(groups):
        lines.append(json.dumps({"group": g_id, "size": len(g["rows"]), "keep": keys[g["keep"]],
                                 "members": [keys[r] for r in g["rows"]],
                                 "owners": sorted({str(meta[r].get("owner")) for r in g["rows"]
                                                   if meta[r].get("owner") is not None})}))
    atomic_write_text(out / "groups.jsonl", "".join(line + "\n" for line in lines))
    cluster_of = np.full(n, -1, dtype=np.int64)
    cluster_of[vrows] = labels
    atomic_write_text(out / "clusters.tsv", "key\tcluster\tcentroid_sim\n" + "".join(
        f"{keys[r]}\t{cluster_of[r]}\t{csims[p]:.4f}\n" for p, r in enumerate(vrows)))

    order = np.argsort(nn_all, kind="stable")[:cfg.gallery_outliers]
    outlier_rows = vrows[order].tolist()
    outlier_sims = nn_all[order].tolist()
    show = outlier_rows + [r for g in groups[:cfg.gallery_groups] for r in
                           ([g["keep"]] + [m for m in g["rows"] if m != g["keep"]][:cfg.gallery_members - 1])]
    try:
        thumbs = report.thumbnails(info, show, cfg.thumb_size)
    except Exception as exc:  # shards moved or gone: the report still renders, without galleries
        log.warning("thumbnails unavailable (%s); galleries will be empty", exc)
        thumbs = {}
    summary["report_thumbnails"] = len(thumbs)
    page = report.render(summary, sweep, nn_sample, cstats["sizes"], groups, keys, outlier_rows, outlier_sims,
                         thumbs, cfg)
    atomic_write_text(out / "report.html", page)
    timings["total"] = round(time.perf_counter() - t0, 3)
    summary["seconds"] = timings
    atomic_write_json(out / "summary.json", summary)
    return summary
