"""Task metrics, in numpy, written out so each can be checked against a reference.

- NME (%): mean point-to-point error over a face, normalised by the inter-ocular distance
  (outer eye corners for 68 points, eye centres for 5) or the box diagonal (AFLW style).
- accuracy, macro-F1 for classification.
- ICC(3,1) (two-way mixed, consistency, single rater; Shrout & Fleiss), CCC, RMSE, Pearson
  for regression, per target and averaged.
- TAR at FAR for verification: the best true-accept rate at a threshold whose false-accept rate
  does not exceed FAR (the ROC definition).

`PRIMARY` names each task's headline metric and whether lower is better; the curve and the
hyper-parameter search use it.
"""
from __future__ import annotations

import numpy as np

from facesift.finetune.datasets import OCULAR

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
PRIMARY = {"landmarks": ("nme", True), "classification": ("accuracy", False),
           "regression": ("icc", False), "recognition": ("tar@far=1e-03", False)}


def lower_is_better(metric: str) -> bool:
    return metric.startswith(("nme", "rmse", "loss"))


# ---------------------------------------------------------------- landmarks

def nme(pred: np.ndarray, gt: np.ndarray, norm: str = "inter-ocular") -> np.ndarray:
    """Per-face NME in % of (B, K, 2) predictions against ground truth."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    err = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    if norm == "inter-ocular":
        k = gt.shape[1]
        if k not in OCULAR:
            raise ValueError(f"no inter-ocular definition for {k} points; use norm='diagonal'")
        a, b = OCULAR[k]
        d = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
    elif norm == "diagonal":
        span = gt.max(1) - gt.min(1)
        d = np.sqrt((span ** 2).sum(-1))
    else:
        raise ValueError(f"unknown NME normalisation {norm!r}")
    return 100.0 * err / np.maximum(d, 1e-9)


def landmark_metrics(pred: np.ndarray, gt: np.ndarray, groups: list[str] | None = None) -> dict:
    out = {"nme": float(nme(pred, gt).mean()) if gt.shape[1] in OCULAR else float("nan"),
           "nme_diag": float(nme(pred, gt, "diagonal").mean())}
    if gt.shape[1] not in OCULAR:
        out["nme"] = out["nme_diag"]
    if groups is not None and len(set(groups)) > 1:   # per source: differently cropped parts
        per = nme(pred, gt) if gt.shape[1] in OCULAR else nme(pred, gt, "diagonal")
        g = np.asarray(groups)
        for name in sorted(set(groups)):
            out[f"nme[{name}]"] = float(per[g == name].mean())
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
