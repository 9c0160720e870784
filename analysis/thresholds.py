"""One redundancy run's thresholds: calibrated where not given, then candidate pairs verified.

Why two stages: the embedding (or hash) threshold is calibrated on known copies of the
dataset's own images (`analysis.calibrate`), but a face embedding cannot tell a copy from
another photo of the same face. So with verification on (the default, for pair-defined
groups) the first threshold only picks *candidates* — the lowest with an estimated precision
of `candidate_precision` (0.2: at most about four false candidates per true one, which bounds the cost)
and at most `verify.max_pairs` of them — and every candidate pair is then scored on aligned
thumbnails (`analysis.verify_pairs`). That score's threshold is calibrated too: the lowest
that keeps `verify.recall` of the known copies that passed the first stage and whose
precision, estimated from the candidates that score like no copy does, reaches
`target_precision` (`calibrate.verify_threshold`). Without verification the first stage is
chosen at `target_precision`.

What was measured goes into summary.json (`calibration`, `verification`) and the report.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from facesift.analysis import calibrate as cal
from facesift.analysis.config import RedundancyConfig
from facesift.analysis.rowimages import decode_rgb, read_rows
from facesift.analysis.verify_pairs import VerifyParams, score_pairs, thumbnail

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """The thresholds a run uses and what was measured to choose them."""
    threshold: float
    hamming: int | None
    summary: dict = field(default_factory=dict)
    copies: cal.CopySet | None = None
    copy_sims: np.ndarray | None = None        # per copy: cosine to its original (centred space)
    copy_hamming: np.ndarray | None = None     # per copy: hash distance to its original


def verifies(cfg: RedundancyConfig) -> bool:
    """Pair verification applies to pair-defined groups (components); SemDeDup groups are not pairs."""
    return cfg.verify.enabled and cfg.grouping == "components"


def needs_images(cfg: RedundancyConfig) -> bool:
    """Whether this configuration must read images back from the shards."""
    return (cfg.threshold is None or ("hash" in cfg.by and cfg.hamming is None)
            or (verifies(cfg) and cfg.verify.threshold is None))


def _params(cfg: RedundancyConfig) -> VerifyParams:
    return VerifyParams(size=cfg.verify.size, window=cfg.verify.window, mirror=cfg.verify.mirror)


def _stage_target(cfg: RedundancyConfig) -> float:
    return cfg.calibrate.candidate_precision if verifies(cfg) else cfg.calibrate.target_precision


def _fit_budget(t: float, count_pairs: Callable[[float], int] | None, grid: np.ndarray, budget: int) -> tuple[float, bool]:
    """Raise the candidate threshold until the k-NN graph holds at most `budget` pairs above it."""
    if count_pairs is None or count_pairs(t) <= budget:
        return t, False
    for q in np.unique(np.quantile(grid, np.linspace(0.5, 1.0, 51))):
        if q > t and count_pairs(float(q)) <= budget:
            return float(q), True
    return float(np.nextafter(np.float32(grid.max()), np.float32(np.inf))), True


def calibrate_run(info: dict, vrows: np.ndarray, xv: np.ndarray, mean: np.ndarray | None, graph_sims: np.ndarray,
                  hashes: np.ndarray | None, cfg: RedundancyConfig,
                  count_pairs: Callable[[float], int] | None = None) -> Calibration:
    """First-stage thresholds (cosine, and Hamming for hash-defined duplicates): the given ones,
    or calibrated. `graph_sims` is the k-NN graph's similarity matrix over the valid rows.
    Raises cal.CalibrationError / RowImagesUnavailable when calibration is needed and
    impossible; keeps the copies for the verification stage."""
    t0 = time.perf_counter()
    ccfg = cfg.calibrate
    by_hash = "hash" in cfg.by
    target = _stage_target(cfg)
    out = Calibration(threshold=cfg.threshold if cfg.threshold is not None else float("nan"),
                      hamming=cfg.hamming if by_hash else None)
    out.summary = summary = {
        "sample": 0, "copies": 0, "families": list(ccfg.families), "target_precision": ccfg.target_precision,
        "verified": verifies(cfg),
        "first_stage": (f"candidates at estimated precision >= {ccfg.candidate_precision}" if verifies(cfg)
                        else f"estimated precision >= {ccfg.target_precision}")}
    if not needs_images(cfg):
        summary["skipped"] = "every threshold was given"
        return out
    sample = cal.sample_rows(vrows, ccfg.sample, cfg.seed)
    copies = cal.make_copies(read_rows(info, sample.tolist()), tuple(ccfg.families), ccfg.copies_per_image, cfg.seed)
    if len(copies.rows) == 0:
        raise cal.CalibrationError("none of the sampled images could be decoded")
    out.copies = copies
    sides = np.array(list(copies.effective.values()))
    summary.update(sample=len(copies.originals), copies=int(len(copies.rows)),
                   effective_side={"min": int(sides.min()), "median": int(np.median(sides)), "max": int(sides.max())})
    pos = np.searchsorted(vrows, copies.rows)

    # the cosine side is always measured, even for hash-defined duplicates: the sweep and report use it
    embedder = cal.rebuild_embedder(info)
    emb = cal.centre(cal.embed_images(embedder, copies.copies), mean)
    out.copy_sims = np.einsum("ij,ij->i", emb, np.asarray(xv[pos], np.float32))
    entries = graph_sims[np.isfinite(graph_sims)]
    nearest = graph_sims[:, 0][np.isfinite(graph_sims[:, 0])] if graph_sims.shape[1] else np.zeros(0)
    seen = cal.seen_families(out.copy_sims, copies.family, nearest)
    sel = cal.select_threshold(out.copy_sims[seen], entries, target, ccfg.min_copy_mass, weight=0.5)
    sel["families_unseen"] = sorted(set(np.asarray(copies.family)[~seen].tolist()))
    if cfg.threshold is None:
        t, capped = _fit_budget(sel["threshold"], count_pairs if verifies(cfg) else None, entries,
                                cfg.verify.max_pairs)
        sel["capped_by_max_pairs"] = capped
        out.threshold = round(t, 6)
    summary["emb"] = {**cal.public(sel), "source": "calibrated" if cfg.threshold is None else "given",
                      "used": out.threshold,
                      "per_family_recall": cal.per_family(out.copy_sims, copies.family, out.threshold),
                      "histogram": cal.histogram(out.copy_sims, nearest)}
    if by_hash:
        _calibrate_hash(out, copies, hashes, vrows, sample, cfg, target)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("calibration: cosine %s%s in %.1f s", out.threshold,
             f", Hamming {out.hamming}" if by_hash else "", summary["seconds"])
    return out


def _calibrate_hash(out: Calibration, copies: cal.CopySet, hashes: np.ndarray, vrows: np.ndarray,
                    sample: np.ndarray, cfg: RedundancyConfig, target: float) -> None:
    """The Hamming radius: copy distances against the close pairs around the sampled rows."""
    from facesift.analysis.hashes import compute
    kind = "dhash" if cfg.by == "dhash" else "phash"
    orig = {r: compute(im, kind) for r, im in copies.originals.items()}
    o = np.stack([orig[int(r)] for r in copies.rows])
    c = np.stack([compute(im, kind) for im in copies.copies])
    out.copy_hamming = np.unpackbits(np.bitwise_xor(o, c), axis=1).sum(1).astype(np.int64)
    codes = np.ascontiguousarray(hashes[vrows][:, slice(8, 16) if kind == "dhash" else slice(0, 8)])
    qpos = np.searchsorted(vrows, sample)
    dist = _neighbour_distances(codes, qpos, cfg.search.k)
    nearest = dist[:, 0] if dist.shape[1] else np.zeros(0)
    weight = len(vrows) / (2.0 * max(1, len(qpos)))
    seen = cal.seen_families(-out.copy_hamming, copies.family, -nearest)
    sel = cal.select_threshold(-out.copy_hamming[seen], -dist[dist <= 64], target, cfg.calibrate.min_copy_mass,
                               weight=weight, step=1.0)
    sel["families_unseen"] = sorted(set(np.asarray(copies.family)[~seen].tolist()))
    radius = max(0, min(64, int(round(-sel["threshold"]))))
    if cfg.hamming is None:
        out.hamming = radius
    out.summary["hamming"] = {
        **{k: v for k, v in cal.public(sel).items() if k != "threshold"}, "radius": radius, "kind": kind,
        "source": "calibrated" if cfg.hamming is None else "given", "used": out.hamming,
        "per_family_recall": cal.per_family(-out.copy_hamming, copies.family, -out.hamming),
        "histogram": cal.histogram(out.copy_hamming, nearest, integer=True)}


def _neighbour_distances(codes: np.ndarray, query_pos: np.ndarray, k: int) -> np.ndarray:
    """Hamming distances from each queried row to its k nearest *other* rows (65 = none)."""
    import faiss
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    kk = min(k + 1, len(codes))
    dist, ids = index.search(np.ascontiguousarray(codes[query_pos]), kk)
    out = np.full((len(query_pos), kk - 1), 65, np.int64)
    for n in range(len(query_pos)):
        # self is normally first; where identical rows tie at 0 it may be elsewhere or missing
        other = [int(d) for d, i in zip(dist[n], ids[n]) if i >= 0 and i != query_pos[n]][:kk - 1]
        out[n, :len(other)] = other
    return out


def verify_candidates(info: dict, vrows: np.ndarray, pi: np.ndarray, pj: np.ndarray, calib: Calibration,
                      cfg: RedundancyConfig) -> tuple[np.ndarray, dict]:
    """Which candidate pairs (indices into valid rows) stay: a boolean mask, and what was measured."""
    t0 = time.perf_counter()
    p = _params(cfg)
    summary: dict = {"enabled": True, "candidates": int(len(pi)), "size": p.size, "window": p.window,
                     "mirror": p.mirror}
    rows = np.unique(np.concatenate([vrows[pi], vrows[pj]])) if len(pi) else np.zeros(0, np.int64)
    by_row = read_rows(info, rows.tolist(), decode=lambda data: thumbnail(decode_rgb(data), p.size))
    thumbs = {int(np.searchsorted(vrows, r)): t for r, t in by_row.items()}
    scores = score_pairs(thumbs, pi, pj, p, cfg.verify.workers)
    summary["unreadable_pairs"] = int(sum(thumbs.get(int(a)) is None or thumbs.get(int(b)) is None
                                          for a, b in zip(pi, pj)))
    threshold = cfg.verify.threshold
    copies = calib.copies
    if copies is not None and len(copies.rows):
        passed = _stage_one_passed(calib, cfg)
        use = np.nonzero(passed)[0] if passed.any() else np.arange(len(copies.rows))
        orig = {int(r): thumbnail(copies.originals[int(r)], p.size) for r in np.unique(copies.rows[use])}
        cthumbs = {**orig, **{-1 - int(k): thumbnail(copies.copies[k], p.size) for k in use}}
        copy_scores = score_pairs(cthumbs, copies.rows[use], -1 - use, p, cfg.verify.workers)
        sel = cal.verify_threshold(copy_scores, scores, cfg.calibrate.target_precision, cfg.verify.recall,
                                   min(cfg.verify.min_recall, cfg.verify.recall))
        if threshold is None:
            threshold = round(sel["threshold"], 6)
        both = np.zeros(len(copies.rows), bool)
        if passed.any():
            both[use] = copy_scores >= threshold
        summary.update({**cal.public(sel), "source": "calibrated" if cfg.verify.threshold is None else "given",
                        "copies_after_first_stage": int(passed.sum()),
                        "per_family_recall": cal.per_family(both.astype(float), copies.family, 0.5),
                        "expected_recall_overall": round(float(both.mean()), 4),
                        "histogram": cal.histogram(copy_scores, scores)})
    elif threshold is None:
        raise cal.CalibrationError("no known copies to calibrate the verification threshold")
    else:
        summary["source"] = "given"
    summary["threshold"] = threshold
    keep = scores >= threshold
    summary.update(kept=int(keep.sum()), rejected=int((~keep).sum()), seconds=round(time.perf_counter() - t0, 3))
    log.info("verification: %d of %d candidate pairs kept (score >= %.3f) in %.1f s", keep.sum(), len(keep),
             threshold, summary["seconds"])
    return keep, summary


def _stage_one_passed(calib: Calibration, cfg: RedundancyConfig) -> np.ndarray:
    """Which known copies the first stage would have made candidates (as the run's `--by` does)."""
    n = len(calib.copies.rows)
    emb = calib.copy_sims >= calib.threshold if calib.copy_sims is not None else np.zeros(n, bool)
    ham = (calib.copy_hamming <= calib.hamming if calib.copy_hamming is not None and calib.hamming is not None
           else np.zeros(n, bool))
    if cfg.by == "emb":
        return emb
    if cfg.by in ("phash", "dhash"):
        return ham
    return emb | ham


def explain_unavailable(exc: Exception) -> str:
    """The one line a user sees when calibration or verification cannot read the images."""
    return (f"{exc}. The calibration embeds copies of a sample of the images the way the dataset was embedded, "
            "and verification reads images back: restore what is missing, or give --threshold (and --hamming "
            "with --by phash) and --no-verify")
