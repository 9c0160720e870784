"""The mean-shape baseline: the training pool's average face, scored like a model, stored per result."""
from __future__ import annotations

import json

import numpy as np

from facesift.finetune import grid
from facesift.finetune.baseline import cached_mean_shape, eval_points
from facesift.finetune.metrics import nme
from facesift.finetune.tasks import load_task

from tests.finetune.conftest import tiny_cfg


def test_mean_shape_baseline_by_hand_and_in_every_result(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0])
    task, data = load_task(cfg)
    # by hand: the sample's crops are 80 px and the eval transform resizes them to image_size
    scale = cfg.image_size / 80
    mean = np.stack([r["target"] for r in data.train]).mean(0)
    gt = np.stack([r["target"] for r in data.test])
    want = nme((mean[None] + 0.5) * scale - 0.5 + 0 * gt, (gt + 0.5) * scale - 0.5).mean()
    np.testing.assert_allclose(eval_points(task, data.test), (gt + 0.5) * scale - 0.5, atol=1e-4)
    got = cached_mean_shape(task, data.train, data.test, tmp_path / "cache")
    assert np.isclose(got["nme"], want, rtol=1e-5) and got["nme"] > 0
    assert len(list((tmp_path / "cache" / "baseline").glob("*.json"))) == 1
    assert cached_mean_shape(task, data.train, data.test, tmp_path / "cache") == got   # read back
    assert grid.run_grid(cfg)["done"] == 1
    result = json.loads(next((tmp_path / "ft" / "results").glob("*.json")).read_text())
    assert result["baseline"]["mean_shape"]["nme"] == got["nme"]
