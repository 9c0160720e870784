"""Mirrored test-time averaging for landmarks: exact on the heatmap grid, swaps left and right."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facesift.finetune import trainer
from facesift.finetune.augment import LandmarkTransform, affine_matrix, image_box, warp
from facesift.finetune.datasets import load_image, read_landmarks
from facesift.finetune.decode import decode_heatmaps, gaussian_heatmaps
from facesift.finetune.heads import HeatmapHead
from facesift.finetune.tasks import load_task

from tests.finetune.conftest import tiny_cfg


def test_merge_flipped_recovers_the_points_from_the_mirrored_image(tmp_path, tiny_landmarks):
    """Heatmaps of the points and of the mirrored image's points (mirrored, left/right swapped,
    as a perfect model would predict them) merge into heatmaps that decode to the points."""
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    task, _ = load_task(cfg)
    rec = read_landmarks(tiny_landmarks)[0]
    image = load_image(rec["path"])
    _, pts = LandmarkTransform(32, cfg.augment, train=False)(image, rec)
    m = affine_matrix(rec.get("box") or image_box(image), 32)
    _, mirrored = warp(image, rec["target"], m, 32, flip=True)
    hm = gaussian_heatmaps(pts[None], (8, 8), HeatmapHead.stride, 1.5)
    hm_m = gaussian_heatmaps(torch.from_numpy(mirrored)[None], (8, 8), HeatmapHead.stride, 1.5)
    merged = task.merge_flipped(hm, hm_m)
    np.testing.assert_allclose(decode_heatmaps(merged, HeatmapHead.stride)[0].numpy(), pts.numpy(), atol=0.05)
    # without the swap the eyes would land on each other: the left eye's merged peak would split
    assert not torch.allclose(merged, 0.5 * (hm + hm_m.flip(-1)))


def test_predict_with_test_flip_averages_the_two_views(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    task, split = load_task(cfg)
    torch.manual_seed(0)
    model = trainer.build_model(task, "scratch", "resnet18").eval()
    recs = split.test[:4]
    plain, _ = trainer.predict(model, task, recs, cfg.train)
    cfg.test_flip = True
    both, _ = trainer.predict(model, task, recs, cfg.train)
    x = torch.stack([task.transform(False)(load_image(r["path"]), r)[0] for r in recs])
    with torch.no_grad():
        want = task.predict(task.merge_flipped(model(x), model(x.flip(-1))))
    np.testing.assert_allclose(both, want, atol=1e-4)
    assert not np.allclose(both, plain)


def test_test_flip_needs_a_left_right_correspondence(tmp_path, tiny_landmarks):
    from facesift.finetune.tasks import LandmarkTask
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    cfg.test_flip = True
    with pytest.raises(ValueError, match="test_flip"):
        LandmarkTask(cfg, {"num_points": 7})
