"""Metrics against independent references: pingouin (ICC3), scikit-learn (ROC, F1), by hand (NME)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_curve

from facesift.finetune import metrics


def test_icc31_matches_pingouin():
    pingouin = pytest.importorskip("pingouin")
    rng = np.random.default_rng(1)
    gt = rng.normal(size=40)
    pred = 0.7 * gt + rng.normal(scale=0.5, size=40) + 0.3
    long = pd.DataFrame({"target": np.tile(np.arange(40), 2), "rater": ["gt"] * 40 + ["pred"] * 40,
                         "score": np.concatenate([gt, pred])})
    ref = pingouin.intraclass_corr(long, targets="target", raters="rater", ratings="score")
    table = ref.set_index("Type")["ICC"]
    icc3 = float(table["ICC3"] if "ICC3" in table.index else table["ICC(C,1)"])   # older / newer pingouin names
    assert metrics.icc3_1(pred, gt) == pytest.approx(icc3, abs=1e-9)


def test_regression_metrics_references():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(50, 2))
    pred = gt + rng.normal(scale=0.3, size=(50, 2))
    out = metrics.regression_metrics(pred, gt, ["valence", "arousal"])
    assert out["rmse"] == pytest.approx(np.mean([np.sqrt(np.mean((pred[:, j] - gt[:, j]) ** 2)) for j in range(2)]))
    assert out["pearson[valence]"] == pytest.approx(np.corrcoef(pred[:, 0], gt[:, 0])[0, 1])
    # CCC = Pearson when means and variances agree; below it otherwise
    assert metrics.ccc(gt[:, 0], gt[:, 0]) == pytest.approx(1.0)
    assert metrics.ccc(gt[:, 0] + 1, gt[:, 0]) < 1.0
    assert out["ccc[arousal]"] <= out["pearson[arousal]"] + 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tar_at_far_matches_sklearn_roc(seed):
    rng = np.random.default_rng(seed)
    gen = rng.normal(1.0, 1.0, 300).round(2)        # rounding makes ties
    imp = rng.normal(-1.0, 1.0, 5000).round(2)
    scores = np.concatenate([gen, imp])
    same = np.concatenate([np.ones(300), np.zeros(5000)])
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    got = metrics.tar_at_far(scores, same, fars=(1e-4, 1e-3, 1e-2, 1e-1))
    for far in (1e-4, 1e-3, 1e-2, 1e-1):
        assert got[f"tar@far={far:.0e}"] == pytest.approx(tpr[fpr <= far].max()), far


def test_nme_by_hand():
    gt = np.array([[[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]], dtype=float)   # eyes 20 px apart
    pred = gt.copy()
    pred[0, 2] += [3, 4]       # nose off by 5 px
    pred[0, 4] += [0, -2]      # a mouth corner off by 2 px
    # mean error (5 + 2) / 5 = 1.4 px; / 20 px inter-ocular = 7 %
    assert metrics.nme(pred, gt)[0] == pytest.approx(7.0)
    diag = np.hypot(20, 20)    # box 20 x 20
    assert metrics.nme(pred, gt, "diagonal")[0] == pytest.approx(100 * 1.4 / diag)
    # 68 points: outer eye corners 36 and 45
    g68 = np.zeros((1, 68, 2))
    g68[0, :, 0] = np.arange(68)
    g68[0, 45, 0] = 36 + 50
    p68 = g68 + [0.5, 0]
    assert metrics.nme(p68, g68)[0] == pytest.approx(100 * 0.5 / 50)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 5, 200)
    pred = np.where(rng.random(200) < 0.6, gt, rng.integers(0, 6, 200))
    out = metrics.classification_metrics(pred, gt)
    assert out["accuracy"] == pytest.approx(np.mean(pred == gt))
    assert out["macro_f1"] == pytest.approx(f1_score(gt, pred, average="macro"))
