"""Test-time re-cropping: the geometry round-trips, wild predictions stay bounded, the grid uses it."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from facesift.finetune import grid, trainer
from facesift.finetune.augment import AugmentConfig, LandmarkTransform, affine_matrix, image_box, random_params, warp
from facesift.finetune.datasets import load_image
from facesift.finetune.recrop import RecropTransform, canonical_shape, map_back, recrop_matrix
from facesift.finetune.tasks import load_task

from tests.finetune.conftest import tiny_cfg


def test_recrop_puts_the_prediction_on_the_canonical_shape(tiny_landmarks):
    """Given the true points as the 'prediction', the re-crop's points are the canonical shape
    (zoomed x2 about the crop centre), the image is the same warp, and map_back undoes it."""
    from facesift.finetune.datasets import read_landmarks
    rec = read_landmarks(tiny_landmarks)[0]
    image = load_image(rec["path"])
    size = 32
    _, first_pts = LandmarkTransform(size, AugmentConfig(), train=False)(image, rec)
    first_pts = first_pts.numpy()
    canon = canonical_shape(first_pts[None], size, zoom=2.0)
    np.testing.assert_allclose(canon.mean(0), [(size - 1) / 2] * 2, atol=1e-9)
    spread = lambda p: np.linalg.norm(p - p.mean(0), axis=1).mean()
    assert spread(canon) == pytest.approx(2 * spread(first_pts), rel=1e-6)
    back = recrop_matrix(canon, first_pts)
    first = np.vstack([affine_matrix(image_box(image), size), [0, 0, 1]])
    warped, pts = warp(image, rec["target"], (np.linalg.inv(back) @ first)[:2], size)
    np.testing.assert_allclose(pts, canon, atol=1e-3)
    x, flat = RecropTransform(size)(image, dict(rec, recrop=back))
    np.testing.assert_allclose(flat.numpy().reshape(3, 3), back, rtol=1e-6)
    assert x.shape == (3, size, size)
    np.testing.assert_allclose(map_back(canon, back), first_pts, atol=1e-3)


def test_a_wild_prediction_gives_a_bounded_recrop():
    canon = canonical_shape(np.array([[[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]]], float), 32, 2.0)
    for pred in (np.full((5, 2), 7.0), np.full((5, 2), np.nan), canon * 1000):
        m = recrop_matrix(canon, pred)
        assert np.isfinite(m).all()
        assert 1 / 8 - 1e-9 <= math.hypot(m[0, 0], m[1, 0]) <= 8 + 1e-9


def test_scale_is_log_uniform():
    cfg = AugmentConfig(scale=(0.5, 2.0))
    rng = random.Random(0)
    s = np.array([random_params(cfg, rng)["scale"] for _ in range(20000)])
    assert s.min() >= 0.5 and s.max() <= 2.0
    assert abs(np.median(s) - 1.0) < 0.03          # uniform would put the median at 1.25
    assert abs((s < 1).mean() - 0.5) < 0.02


def test_config_refuses_a_zoom_the_training_never_showed(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    cfg.recrop.passes, cfg.recrop.zoom = 1, 2.0
    with pytest.raises(ValueError, match="recrop.zoom"):
        cfg.check()                                     # default scale (0.8, 1.25)
    cfg.augment.scale = (0.0, 2.0)
    with pytest.raises(ValueError, match="augment.scale"):
        cfg.check()
    cfg.augment.scale = (0.6, 2.4)
    cfg.check()


def test_grid_scores_with_recrops_and_evaluate_needs_the_training_labels(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0], trials=2)
    cfg.search.lr = [1e-3, 3e-3]
    cfg.augment.scale = (0.6, 2.4)
    cfg.recrop.passes, cfg.recrop.zoom = 2, 2.0
    cfg.check()
    task, data = load_task(cfg)
    torch.manual_seed(0)
    model = trainer.build_model(task, "scratch", "resnet18")
    with pytest.raises(ValueError, match="reference"):
        trainer.evaluate(model, task, data.test, cfg.train)
    plain = trainer.predict(model, task, data.test, cfg.train)[0]
    again = trainer.recropped(model, task, data.test, plain, data.train, cfg.train)
    assert again.shape == plain.shape and np.isfinite(again).all() and not np.allclose(again, plain)
    assert grid.run_grid(cfg)["done"] == 1
    result = json.loads(next((tmp_path / "ft" / "results").glob("*.json")).read_text())
    assert math.isfinite(result["metrics"]["nme"])
    assert all(math.isfinite(t["val_metrics"]["nme"]) for t in result["search"]["trials"])
