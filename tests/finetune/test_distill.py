"""Self-distillation pool: `.pts` records keep their face box and the landmark task's unlabelled
transform crops to it exactly as the labelled transform does (whole photos only when no box)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facesift.finetune import datasets as ds
from facesift.finetune import distill
from facesift.finetune.augment import AugmentConfig, ImageTransform
from facesift.finetune.tasks import LandmarkTask
from facesift.finetune.trainer import HParams

from .conftest import tiny_cfg

SIZE = 32


def write_photo(path: Path, seed: int, size=(120, 100)) -> None:
    """A smooth-ish random photo (JPEG), so crops and whole-image resizes differ visibly."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path, quality=95)


def write_pts_folder(root: Path, n: int = 3) -> Path:
    """n photos of 120x100 with a 68-point iBUG .pts each (1-based `x y` lines), face off-centre."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_photo(root / f"face{i}.jpg", seed=i)
        rng = np.random.default_rng(100 + i)
        pts = np.stack([rng.uniform(55, 95, 68), rng.uniform(40, 75, 68)], 1)   # 1-based pixels
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
        (root / f"face{i}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    return root


def no_augment() -> AugmentConfig:
    return AugmentConfig(scale=(1.0, 1.0), rotate=0.0, translate=0.0, flip=0.0)


def test_pool_records_keep_the_box(tmp_path):
    records = ds.read_pts_dir(write_pts_folder(tmp_path / "pts"))
    cfg = tiny_cfg(tmp_path, data=str(tmp_path / "pts"), distill=1, unlabelled="pool")
    pool = distill.unlabelled_pool(cfg, records)
    assert [r["key"] for r in pool] == [r["key"] for r in records]
    for p, r in zip(pool, records):
        assert p["box"] == r["box"] and p["path"] == r["path"] and p["target"] is None
    # records without a box (landmarks5 lists) get none invented
    plain = [{"key": "a", "path": "a.jpg", "target": np.zeros((5, 2))}]
    assert "box" not in distill.unlabelled_pool(cfg, plain)[0]


def test_unlabelled_transform_crops_like_the_labelled_one(tmp_path):
    records = ds.read_pts_dir(write_pts_folder(tmp_path / "pts"))
    cfg = tiny_cfg(tmp_path, data=str(tmp_path / "pts"), image_size=SIZE, distill=1, unlabelled="pool")
    pool = distill.unlabelled_pool(cfg, records)

    # augmentation off: pixel-identical to the eval (test-time) crop, and not the whole photo
    cfg.augment = no_augment()
    task = LandmarkTask(cfg, {"num_points": 68})
    unl = task.unlabelled_transform()
    for rec, prec in zip(records, pool):
        image = ds.load_image(rec["path"])
        u, target = unl(image, prec)
        x_eval, _ = task.transform(False)(image, rec)
        assert u.shape == (3, SIZE, SIZE) and int(target) == -1
        assert torch.equal(u, x_eval)
        whole, _ = ImageTransform(SIZE, cfg.augment, False)(image, {"path": rec["path"], "target": None})
        assert (u - whole).abs().max() > 0.5      # the bug: the whole 120x100 photo, face small in it

    # default augmentation, same seed: the same random warp (scale, rotation, shift, flip) of the box crop
    cfg.augment = AugmentConfig()
    task = LandmarkTask(cfg, {"num_points": 68})
    unl, labelled = task.unlabelled_transform(), task.transform(True)
    for seed in range(4):
        for rec, prec in zip(records, pool):
            image = ds.load_image(rec["path"])
            random.seed(seed)
            u, _ = unl(image, prec)
            random.seed(seed)
            x, _ = labelled(image, rec)
            assert torch.equal(u, x)


def test_unlabelled_folder_images_stay_whole(tmp_path):
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(2):
        write_photo(folder / f"u{i}.jpg", seed=10 + i)
    cfg = tiny_cfg(tmp_path, data="unused", image_size=SIZE, distill=1, unlabelled=str(folder))
    cfg.augment = no_augment()
    pool = distill.unlabelled_pool(cfg, [])
    assert len(pool) == 2 and all("box" not in r for r in pool)
    unl = LandmarkTask(cfg, {"num_points": 68}).unlabelled_transform()
    for rec in pool:
        image = ds.load_image(rec["path"])
        u, _ = unl(image, rec)
        whole, _ = ImageTransform(SIZE, cfg.augment, False)(image, rec)
        assert torch.equal(u, whole)


def test_one_distillation_step_on_a_pts_pool(tmp_path):
    """The pool's records and transform go through the DataLoader and a teacher/student step."""
    records = ds.read_pts_dir(write_pts_folder(tmp_path / "pts"))
    cfg = tiny_cfg(tmp_path, data=str(tmp_path / "pts"), image_size=SIZE, distill=1, unlabelled="pool")
    cfg.train.batch_size = 2
    task = LandmarkTask(cfg, {"num_points": 68})
    pool = distill.unlabelled_pool(cfg, records)
    from facesift.finetune import trainer
    torch.manual_seed(0)
    teacher = trainer.build_model(task, "scratch", "resnet18")
    student, history = distill.self_distill(cfg, task, teacher, records, pool, "scratch",
                                            HParams(lr=1e-3, steps=1, backbone_lr=1.0), seed=0,
                                            device=torch.device("cpu"))
    assert len(history) == 1 and np.isfinite(history[0]["final_loss"])


def test_grid_run_distils_on_the_boxed_pool_and_records_the_norm(tmp_path):
    """End to end (1 step each): a `.pts` grid run with `--unlabelled pool` finishes and its
    result names the NME normalisation beside the (numbers-only) metrics."""
    import json

    from facesift.finetune import grid

    train = write_pts_folder(tmp_path / "train", n=3)
    test = write_pts_folder(tmp_path / "test", n=2)
    cfg = tiny_cfg(tmp_path, data=str(train), test=str(test), image_size=SIZE, fractions=[1.0],
                   distill=1, unlabelled="pool", arch="resnet18")
    cfg.search.steps = [1]
    cfg.train.batch_size = 2
    cfg.train.device = "cpu"
    assert grid.run_grid(cfg) == {"done": 1, "skipped": 0, "failed": 0, "total": 1}
    (res,) = [json.loads(f.read_text()) for f in (tmp_path / "ft" / "results").glob("*.json")]
    assert res["nme_norm"] == "inter-ocular" and res["sizes"]["unlabelled"] == 3
    assert {"nme", "nme_io", "nme_diag"} <= set(res["metrics"])
    assert all(isinstance(v, float) for v in res["metrics"].values())
