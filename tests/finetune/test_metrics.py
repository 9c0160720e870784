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


# ---------------------------------------------------------------- NME normalisation (nme_norm)

def _five_points():
    gt = np.array([[[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]], dtype=float)
    pred = gt.copy()
    pred[0, 2] += [3, 4]
    pred[0, 4] += [0, -2]      # mean error 1.4 px, as in test_nme_by_hand
    return pred, gt


def test_box_diagonal_differs_from_the_landmark_extent():
    pred, gt = _five_points()
    # landmarks span 20 x 20 (diagonal 28.28); the annotated box is 30 px square (diagonal 42.43)
    assert metrics.box_diagonal((20, 30, 30)) == pytest.approx(30 * np.sqrt(2))
    assert metrics.box_diagonal((0, 0, 30, 40)) == pytest.approx(50.0)      # (x0, y0, x1, y1) rectangle
    with pytest.raises(ValueError):
        metrics.box_diagonal((1, 2))
    boxed = metrics.nme(pred, gt, "box-diagonal", [30 * np.sqrt(2)])[0]
    assert boxed == pytest.approx(100 * 1.4 / (30 * np.sqrt(2)))
    assert metrics.nme(pred, gt, "box-diagonal")[0] == pytest.approx(100 * 1.4 / np.hypot(20, 20))  # no box
    assert metrics.nme(pred, gt, "diagonal")[0] == pytest.approx(100 * 1.4 / np.hypot(20, 20))      # unchanged
    # a face without a box (NaN) falls back to its landmarks' box, faces with one use it
    two_p, two_g = np.concatenate([pred, pred]), np.concatenate([gt, gt])
    got = metrics.nme(two_p, two_g, "box-diagonal", [50.0, np.nan])
    assert got == pytest.approx([100 * 1.4 / 50, 100 * 1.4 / np.hypot(20, 20)])


def test_landmark_metrics_headline_follows_nme_norm():
    pred, gt = _five_points()
    auto = metrics.landmark_metrics(pred, gt, diagonals=[50.0])
    assert auto["nme"] == pytest.approx(7.0) and auto["nme_io"] == pytest.approx(7.0)
    assert auto["nme_diag"] == pytest.approx(100 * 1.4 / 50)
    boxed = metrics.landmark_metrics(pred, gt, norm="box-diagonal", diagonals=[50.0])
    assert boxed["nme"] == pytest.approx(100 * 1.4 / 50) and boxed["nme_io"] == pytest.approx(7.0)
    assert all(isinstance(v, float) for v in boxed.values())    # curve/search read numbers only
    # the old call (no norm, no boxes) gives the old numbers
    old = metrics.landmark_metrics(pred, gt)
    assert old["nme"] == pytest.approx(7.0) and old["nme_diag"] == pytest.approx(100 * 1.4 / np.hypot(20, 20))
    # per source, under the headline's normalisation
    two_p, two_g = np.concatenate([pred, pred * 2]), np.concatenate([gt, gt * 2])
    per = metrics.landmark_metrics(two_p, two_g, ["a", "b"], norm="box-diagonal", diagonals=[50.0, 50.0])
    assert per["nme[a]"] == pytest.approx(100 * 1.4 / 50) and per["nme[b]"] == pytest.approx(100 * 2.8 / 50)


def test_auto_picks_box_diagonal_for_aflw():
    assert metrics.resolve_nme_norm("auto", 19) == "box-diagonal"     # AFLW, as in the paper
    assert metrics.resolve_nme_norm("auto", 21) == "box-diagonal"
    assert metrics.resolve_nme_norm("auto", 7) == "box-diagonal"      # no eye pair known
    assert metrics.resolve_nme_norm("auto", 5) == "inter-ocular"
    assert metrics.resolve_nme_norm("auto", 68) == "inter-ocular"
    assert metrics.resolve_nme_norm("inter-ocular", 19) == "inter-ocular"   # OCULAR defines 19's eyes
    with pytest.raises(ValueError, match="inter-ocular"):
        metrics.resolve_nme_norm("inter-ocular", 21)
    with pytest.raises(ValueError, match="nme_norm"):
        metrics.resolve_nme_norm("diagonal", 68)
    rng = np.random.default_rng(4)
    gt = rng.uniform(0, 100, (3, 19, 2))
    pred = gt + rng.normal(scale=2, size=gt.shape)
    out = metrics.landmark_metrics(pred, gt, diagonals=[140.0, 150.0, 160.0])
    ref = np.mean(np.linalg.norm(pred - gt, axis=-1).mean(-1) / [140.0, 150.0, 160.0]) * 100
    assert out["nme"] == pytest.approx(ref) and out["nme_diag"] == pytest.approx(ref)
    assert out["nme_io"] != pytest.approx(ref)


def test_config_rejects_a_bad_nme_norm():
    from facesift.finetune.config import FinetuneConfig
    FinetuneConfig(data="x", nme_norm="box-diagonal").check()
    with pytest.raises(ValueError, match=r"nme_norm.*auto, inter-ocular, box-diagonal"):
        FinetuneConfig(data="x", nme_norm="diagonal").check()


def test_task_metrics_use_the_box_in_output_pixels(tmp_path):
    """Boxes are in source pixels, predictions in the crop: the eval transform maps a
    (cx, cy, side) box onto the image_size square, so its diagonal is image_size * sqrt(2)."""
    from PIL import Image

    from facesift.finetune.augment import affine_matrix, warp
    from facesift.finetune.tasks import LandmarkTask

    from .conftest import tiny_cfg

    size = 32
    rng = np.random.default_rng(5)
    records = []
    for i, (box, k) in enumerate([((70.0, 55.0, 60.0), 19), ((50.0, 40.0, 40.0), 19), (None, 19)]):
        path = tmp_path / "photos" / f"p{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)).save(path)
        centre = np.array(box[:2]) if box else np.array([60.0, 50.0])
        pts = (centre + rng.uniform(-15, 15, (k, 2))).astype(np.float32)
        rec = {"key": f"p{i}", "path": str(path), "target": pts}
        if box:
            rec["box"] = box
        records.append(rec)
    cfg = tiny_cfg(tmp_path, data="unused", image_size=size)
    task = LandmarkTask(cfg, {"num_points": 19})
    transform = task.transform(False)
    targets = np.stack([transform(Image.open(r["path"]).convert("RGB"), r)[1].numpy() for r in records])
    # the box's corners through the transform's own point mapping: its diagonal in the crop
    for r in records[:2]:
        cx, cy, side = r["box"]
        corners = np.array([[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]]) - 0.5  # continuous -> pixel
        _, mapped = warp(Image.new("RGB", (4, 4)), corners, affine_matrix(r["box"], size), size)
        assert np.linalg.norm(mapped[1] - mapped[0]) == pytest.approx(size * np.sqrt(2), rel=1e-5)
    assert task.box_diagonals(records)[:2] == pytest.approx([size * np.sqrt(2)] * 2)
    assert np.isnan(task.box_diagonals(records)[2])
    preds = targets + np.array([0.6, 0.8], np.float32)        # 1 px off everywhere
    got = task.metrics(preds, targets, records)
    extent = np.hypot(*(targets[2].max(0) - targets[2].min(0)))   # no box: the landmarks' box
    ref = np.mean([100 / (size * np.sqrt(2)), 100 / (size * np.sqrt(2)), 100 / extent])
    assert got["nme"] == pytest.approx(ref, rel=1e-5) and got["nme_diag"] == pytest.approx(ref, rel=1e-5)
    # the landmark-extent diagonal of a boxed face is a different (smaller) normaliser
    assert np.hypot(*(targets[0].max(0) - targets[0].min(0))) < size * np.sqrt(2) * 0.9
    # inter-ocular asked for explicitly: the headline switches, the box diagonal is still reported
    cfg.nme_norm = "inter-ocular"
    io = LandmarkTask(cfg, {"num_points": 19}).metrics(preds, targets, records)
    assert io["nme"] == pytest.approx(io["nme_io"]) and io["nme_diag"] == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ValueError, match="inter-ocular"):
        LandmarkTask(cfg, {"num_points": 21})


def test_five_point_nme_is_split_into_frontal_and_turned_faces_by_the_annotations_yaw():
    from facesift.common.geometry import estimate_yaw
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], np.float64)
    turned = frontal.copy()
    turned[2, 0] += 16                        # the nose towards one side: about 39 degrees
    gt = np.stack([frontal, turned])
    assert abs(estimate_yaw(gt[:1])[0]) < metrics.FRONTAL_YAW <= abs(estimate_yaw(gt[1:])[0])
    pred = gt.copy()
    pred[0] += 2.0                            # the frontal face is off by 2 px on each axis
    out = metrics.landmark_metrics(pred, gt)
    assert out["nme[frontal]"] == pytest.approx(100 * np.hypot(2, 2) / 40) and out["nme[turned]"] == 0.0
    assert out["nme"] == pytest.approx((out["nme[frontal]"] + out["nme[turned]"]) / 2)
    only = metrics.landmark_metrics(pred[:1], gt[:1])     # no turned face: no turned entry
    assert "nme[turned]" not in only and "nme[frontal]" in only
