"""Task metrics, in numpy, written out so each can be checked against a reference.

- NME (%): mean point-to-point error over a face, normalised by the inter-ocular distance
  (outer eye corners for 68 points, eye centres for 5) or the face box diagonal (AFLW style;
  the landmarks' bounding box where no box is annotated); `nme_norm` picks the headline.
- accuracy, macro-F1 for classification.
- ICC(3,1) (two-way mixed, consistency, single rater; Shrout & Fleiss), CCC, RMSE, Pearson
  for regression, per target and averaged.
- TAR at FAR for verification: the best true-accept rate at a threshold whose false-accept rate
  does not exceed FAR (the ROC definition).

`PRIMARY` names each task's headline metric and whether lower is better; the curve and the
hyper-parameter search use it.
"""
from __future__ import annotations

import math

import numpy as np

from facesift.common.geometry import estimate_yaw
from facesift.finetune.datasets import OCULAR

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
PRIMARY = {"landmarks": ("nme", True), "classification": ("accuracy", False),
           "regression": ("icc", False), "recognition": ("tar@far=1e-03", False)}


def lower_is_better(metric: str) -> bool:
    return metric.startswith(("nme", "rmse", "loss"))


# ---------------------------------------------------------------- landmarks

NME_NORMS = ("auto", "inter-ocular", "box-diagonal")
# Point counts whose literature normalises by the face box diagonal even though an inter-ocular
# pair exists (AFLW's 19 and 21 points: the paper and the AFLW benchmarks report NME_box), so
# `auto` follows the convention each dataset is compared under.
BOX_DIAGONAL_POINTS = (19, 21)


def resolve_nme_norm(norm: str, num_points: int) -> str:
    """The concrete normalisation ('inter-ocular' or 'box-diagonal') `norm` means for K points.

    `auto` is inter-ocular where the point count defines the eyes (datasets.OCULAR) and its
    benchmarks use it (5, 68, 98 points), else box-diagonal; an explicit 'inter-ocular' for a
    count without an eye pair is an error here, before any training, not after it.
    """
    if norm not in NME_NORMS:
        raise ValueError(f"nme_norm must be one of {', '.join(NME_NORMS)}, got {norm!r}")
    if norm == "auto":
        return ("inter-ocular" if num_points in OCULAR and num_points not in BOX_DIAGONAL_POINTS
                else "box-diagonal")
    if norm == "inter-ocular" and num_points not in OCULAR:
        raise ValueError(f"nme_norm: no inter-ocular definition for {num_points} points; "
                         "use 'box-diagonal' or 'auto'")
    return norm


def box_diagonal(box) -> float:
    """Diagonal of a face box: (cx, cy, side) square -> side * sqrt(2); (x0, y0, x1, y1)
    rectangle -> its corner-to-corner length. The two forms differ in length, so no guessing
    beyond that: anything else is refused."""
    b = [float(v) for v in box]
    if len(b) == 3:
        return b[2] * math.sqrt(2.0)
    if len(b) == 4:
        return math.hypot(b[2] - b[0], b[3] - b[1])
    raise ValueError(f"a face box is (cx, cy, side) or (x0, y0, x1, y1), got {len(b)} numbers")


def nme(pred: np.ndarray, gt: np.ndarray, norm: str = "inter-ocular",
        diagonals: np.ndarray | None = None) -> np.ndarray:
    """Per-face NME in % of (B, K, 2) predictions against ground truth.

    norm: 'inter-ocular' (OCULAR pair), 'diagonal' (diagonal of the landmarks' bounding box),
    or 'box-diagonal' (`diagonals`, one per face in the same pixels as the points, e.g. the
    annotated face box; a face whose entry is NaN, or all faces when `diagonals` is None, falls
    back to the landmarks' bounding box, the usual stand-in when no box is annotated).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    err = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    if norm == "inter-ocular":
        k = gt.shape[1]
        if k not in OCULAR:
            raise ValueError(f"no inter-ocular definition for {k} points; use norm='box-diagonal'")
        a, b = OCULAR[k]
        d = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    elif norm in ("diagonal", "box-diagonal"):
        span = gt.max(1) - gt.min(1)
        d = np.sqrt((span ** 2).sum(-1))
        if norm == "box-diagonal" and diagonals is not None:
            given = np.asarray(diagonals, np.float64).reshape(-1)
            if given.shape[0] != gt.shape[0]:
                raise ValueError(f"{given.shape[0]} box diagonals for {gt.shape[0]} faces")
            d = np.where(np.isfinite(given), given, d)
    else:
        raise ValueError(f"unknown NME normalisation {norm!r}")
    return 100.0 * err / np.maximum(d, 1e-9)


FRONTAL_YAW = 15.0   # degrees of `estimate_yaw`: about half of web-cropped faces (net_7876) lie below


def landmark_metrics(pred: np.ndarray, gt: np.ndarray, groups: list[str] | None = None,
                     norm: str = "auto", diagonals: np.ndarray | None = None) -> dict:
    """{'nme': headline under `norm`, 'nme_io' (when the points define the eyes), 'nme_diag'
    (box diagonal: `diagonals` where given, else the landmarks' box), 'nme[<group>]' ...,
    and for 5 points 'nme[frontal]' / 'nme[turned]': |yaw| of the annotation below / from
    `FRONTAL_YAW`, the split a pose-balanced pretraining is judged on (docs/studies.md)}.

    Values are floats only: result consumers (curve tables, search, logs) treat every entry as
    a number; the resolved normalisation's name is recorded beside the metrics by the grid.
    """
    norm = resolve_nme_norm(norm, gt.shape[1])
    diag = nme(pred, gt, "box-diagonal", diagonals)
    io = nme(pred, gt, "inter-ocular") if gt.shape[1] in OCULAR else None
    per = io if norm == "inter-ocular" else diag
    out = {"nme": float(per.mean())}
    if io is not None:
        out["nme_io"] = float(io.mean())
    out["nme_diag"] = float(diag.mean())
    if groups is not None and len(set(groups)) > 1:   # per source: differently cropped parts
        g = np.asarray(groups)
        for name in sorted(set(groups)):
            out[f"nme[{name}]"] = float(per[g == name].mean())
    if gt.shape[1] == 5:   # per pose: the yaw of the annotated points, estimated as curate does
        frontal = np.abs(estimate_yaw(gt)) < FRONTAL_YAW
        for name, part in (("frontal", frontal), ("turned", ~frontal)):
            if part.any():
                out[f"nme[{name}]"] = float(per[part].mean())
    return out


# ---------------------------------------------------------------- classification

def classification_metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Accuracy and macro-F1 (F1 averaged over every class that is true or predicted)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    classes = np.unique(np.concatenate([gt, pred]))
    f1s = []
    for c in classes:
        tp = np.sum((pred == c) & (gt == c))
        fp = np.sum((pred == c) & (gt != c))
        fn = np.sum((pred != c) & (gt == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(pred == gt)), "macro_f1": float(np.mean(f1s))}


# ---------------------------------------------------------------- regression

def icc3_1(pred: np.ndarray, gt: np.ndarray) -> float:
    """ICC(3,1): targets x {gt, pred} two-way ANOVA; (MSR - MSE) / (MSR + (k-1) MSE), k=2."""
    y = np.stack([np.asarray(gt, np.float64), np.asarray(pred, np.float64)], 1)
    n, k = y.shape
    grand = y.mean()
    ss_rows = k * ((y.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((y.mean(0) - grand) ** 2).sum()
    ss_err = ((y - grand) ** 2).sum() - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse
    return float((msr - mse) / denom) if denom > 0 else 0.0


def ccc(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    cov = ((pred - pred.mean()) * (gt - gt.mean())).mean()
    denom = pred.var() + gt.var() + (pred.mean() - gt.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def pearson(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.std() == 0 or gt.std() == 0:
        return 0.0
    return float(np.corrcoef(pred, gt)[0, 1])


def regression_metrics(pred: np.ndarray, gt: np.ndarray, names: list[str] | None = None) -> dict:
    pred = np.asarray(pred, np.float64).reshape(len(pred), -1)
    gt = np.asarray(gt, np.float64).reshape(len(gt), -1)
    names = names or [f"t{i}" for i in range(gt.shape[1])]
    out: dict[str, float] = {}
    per = {"icc": icc3_1, "ccc": ccc, "pearson": pearson,
           "rmse": lambda p, g: float(np.sqrt(np.mean((p - g) ** 2)))}
    for metric, fn in per.items():
        values = [fn(pred[:, j], gt[:, j]) for j in range(gt.shape[1])]
        out[metric] = float(np.mean(values))
        if gt.shape[1] > 1:
            for name, v in zip(names, values):
                out[f"{metric}[{name}]"] = float(v)
    return out


# ---------------------------------------------------------------- verification

def tar_at_far(scores: np.ndarray, same: np.ndarray, fars=FARS) -> dict:
    """{'tar@far=1e-04': ...}: accept when score >= t; the best TAR whose FAR <= far."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same).astype(bool)
    gen, imp = scores[same], np.sort(scores[~same])[::-1]
    if len(gen) == 0 or len(imp) == 0:
        raise ValueError("verification needs both genuine and impostor pairs")
    out = {}
    for far in fars:
        allowed = int(np.floor(far * len(imp) + 1e-9))   # false accepts we may make
        if allowed >= len(imp):
            tar = 1.0
        else:
            tar = float(np.mean(gen > imp[allowed]))      # threshold just above the next impostor
        out[f"tar@far={far:.0e}"] = tar
    return out
