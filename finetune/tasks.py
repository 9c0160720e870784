"""The four face tasks: each binds its data, head, loss, distillation loss and metrics.

One trainer (trainer.py) serves all of them through this small interface:
`head(trunk)`, `transform(train)`, `loss(model, out, target)`, `distill_loss(out, teacher_out)`,
`predict(out)` and `metrics(preds, targets, records)`. A task is built from the resolved config
and what the data says (number of points, classes, target names) by `load_task`, which also
splits off the test set — by hash of the key, so the split is the same on every machine and
never depends on file order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facesift.finetune import datasets as ds
from facesift.finetune import losses, metrics
from facesift.finetune.augment import AugmentConfig, ImageTransform, LandmarkTransform, affine_matrix
from facesift.finetune.config import FinetuneConfig
from facesift.finetune.decode import decode_heatmaps, gaussian_heatmaps
from facesift.finetune.heads import CosFaceHead, HeatmapHead, LinearHead, stage_channels
from facesift.shards.split import key_score

log = logging.getLogger(__name__)
TEST_SALT = 7919          # decorrelates the test split from the fraction hashes (which use the run seed)


@dataclass
class TaskData:
    train: list[dict]                 # the labelled training pool (fractions are drawn from it)
    test: list[dict]
    pairs: list | None = None         # recognition: verification pairs over test images
    info: dict = field(default_factory=dict)


class Task:
    name = ""

    def __init__(self, cfg: FinetuneConfig, info: dict):
        self.cfg, self.info = cfg, info
        self.primary, self.lower_is_better = metrics.PRIMARY[self.name]

    def transform(self, train: bool):
        return ImageTransform(self.cfg.image_size, self.cfg.augment, train)

    def unlabelled_transform(self):
        return ImageTransform(self.cfg.image_size, self.cfg.augment, True)

    def head(self, trunk: nn.Module) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distill_loss(self, out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out.float(), teacher_out.float())

    def predict(self, out: torch.Tensor) -> np.ndarray:
        return out.float().cpu().numpy()

    def metrics(self, preds: np.ndarray, targets: np.ndarray, records: list[dict], pairs=None) -> dict:
        raise NotImplementedError


class UnlabelledLandmarkTransform:
    """(image, record) -> (tensor, -1) for the distillation pool of a landmark task.

    The labelled transform, run on placeholder points: the same box (or the whole image when
    the record has none), the same random warp and the same flip rule, so the teacher and the
    student see faces framed as in the labelled and test data (a `.pts` pool record's face box,
    not the whole photo). The teacher labels this very image, so no points need to follow it.
    """

    def __init__(self, size: int, cfg: AugmentConfig, num_points: int):
        self.inner = LandmarkTransform(size, cfg, train=True)
        self.num_points = num_points

    def __call__(self, image: Image.Image, rec: dict) -> tuple[torch.Tensor, torch.Tensor]:
        placeholder = dict(rec, target=np.zeros((self.num_points, 2), np.float32))
        x, _ = self.inner(image, placeholder)
        return x, torch.as_tensor(np.asarray(-1))


class LandmarkTask(Task):
    name = "landmarks"

    def __init__(self, cfg: FinetuneConfig, info: dict):
        super().__init__(cfg, info)
        if "num_points" in info:   # a wrong nme_norm fails here (exit 2), not after every run's training
            metrics.resolve_nme_norm(cfg.nme_norm, info["num_points"])
            if cfg.test_flip:
                ds.flip_pairs(info["num_points"], "test_flip")

    def transform(self, train: bool):
        return LandmarkTransform(self.cfg.image_size, self.cfg.augment, train)

    def unlabelled_transform(self):
        return UnlabelledLandmarkTransform(self.cfg.image_size, self.cfg.augment, self.info["num_points"])

    def nme_norm(self, num_points: int | None = None) -> str:
        """The resolved NME normalisation of this task's headline ('inter-ocular' or 'box-diagonal')."""
        return metrics.resolve_nme_norm(self.cfg.nme_norm, num_points or self.info["num_points"])

    def box_diagonals(self, records: list[dict]) -> np.ndarray:
        """Each record's face-box diagonal in output-crop pixels (NaN without a box).

        Boxes are in source pixels, predictions in the crop the eval transform makes: it maps
        the box through `affine_matrix(box, image_size)` (scale 1), whose linear part scales
        lengths by image_size / side, so a (cx, cy, side) box's diagonal becomes
        image_size * sqrt(2). Computed through the same matrix so it follows the transform.
        """
        out = np.full(len(records), np.nan)
        for i, r in enumerate(records):
            box = r.get("box")
            if box is None or len(box) != 3:   # the transform crops (cx, cy, side) boxes only
                continue
            m = affine_matrix(box, self.cfg.image_size)
            out[i] = metrics.box_diagonal(box) * float(np.hypot(m[0, 0], m[1, 0]))
        return out

    def head(self, trunk):
        return HeatmapHead(stage_channels(trunk), self.info["num_points"])

    def loss(self, model, out, target):
        hm = gaussian_heatmaps(target.to(out.device), out.shape[-2:], HeatmapHead.stride, self.cfg.sigma)
        return losses.heatmap_mse(out, hm)

    def predict(self, out):
        return decode_heatmaps(out.float(), HeatmapHead.stride).cpu().numpy()

    def merge_flipped(self, out: torch.Tensor, out_mirrored: torch.Tensor) -> torch.Tensor:
        """The mean of `out` and the mirrored image's heatmaps, mirrored back with left and right
        points swapped. Mirroring is exact on the heatmap grid: input pixel x <-> W - 1 - x
        is heatmap pixel j <-> W/4 - 1 - j at stride 4 (decode.py's pixel centres)."""
        perm = list(range(out.shape[1]))
        for a, b in ds.flip_pairs(out.shape[1], "test_flip"):
            perm[a], perm[b] = b, a
        return 0.5 * (out.float() + out_mirrored.float().flip(-1)[:, perm])   # fp32 even under bf16 autocast

    def metrics(self, preds, targets, records, pairs=None):
        groups = [Path(r["path"]).parent.name for r in records]
        return metrics.landmark_metrics(preds, targets, groups, norm=self.cfg.nme_norm,
                                        diagonals=self.box_diagonals(records))


class ClassificationTask(Task):
    name = "classification"

    def head(self, trunk):
        return LinearHead(trunk.feature_dim, len(self.info["classes"]))

    def loss(self, model, out, target):
        return F.cross_entropy(out.float(), target.to(out.device).long())

    def distill_loss(self, out, teacher_out):
        return losses.soft_cross_entropy(out, teacher_out)

    def predict(self, out):
        return out.float().argmax(1).cpu().numpy()

    def metrics(self, preds, targets, records, pairs=None):
        return metrics.classification_metrics(preds, targets)


class RegressionTask(Task):
    name = "regression"

    def head(self, trunk):
        return LinearHead(trunk.feature_dim, len(self.info["targets"]))

    def loss(self, model, out, target):
        return losses.regression_loss(out, target.to(out.device), self.cfg.regression_loss)

    def metrics(self, preds, targets, records, pairs=None):
        return metrics.regression_metrics(preds, targets, self.info["targets"])


class RecognitionTask(Task):
    name = "recognition"

    def head(self, trunk):
        return CosFaceHead(trunk.feature_dim, len(self.info["classes"]), self.cfg.embed_dim,
                           self.cfg.cosface_scale, self.cfg.cosface_margin)

    def loss(self, model, out, target):
        head = model.head if hasattr(model, "head") else model.module.head
        return F.cross_entropy(head.logits(out, target.to(out.device)), target.to(out.device).long())

    def metrics(self, preds, targets, records, pairs=None):
        """`preds` are embeddings of `records`; scores are cosine similarities of each pair."""
        if pairs is None:
            pairs = ds.make_pairs(records)
        where = {r["path"]: i for i, r in enumerate(records)}
        a = preds[[where[p] for p, _, _ in pairs]]
        b = preds[[where[p] for _, p, _ in pairs]]
        scores = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        same = np.array([s for _, _, s in pairs])
        out = metrics.tar_at_far(scores, same)
        out["pairs"] = len(pairs)
        return out


TASK_TYPES = {t.name: t for t in (LandmarkTask, ClassificationTask, RegressionTask, RecognitionTask)}


def _read(cfg: FinetuneConfig, path: str, classes: list[str] | None = None):
    """Records (+ class or target names) of one labelled file for cfg.task."""
    p = Path(path)
    if cfg.task == "landmarks":
        return ds.read_landmarks(p), {}
    if p.is_dir():   # a folder of Yale-style names: build the manifest on the fly
        rows = ds.yale_manifest(p, cfg.label)
        names = sorted({r["label"] for r in rows})
        index = {c: i for i, c in enumerate(names)}
        recs = [{"key": ds.record_key(r["path"]), "path": str(p / r["path"]), "target": index[r["label"]],
                 "label": r["label"]} for r in rows]
        return recs, {"classes": names}
    if cfg.task == "regression":
        recs, names = ds.read_regression(p)
        return recs, {"targets": names}
    recs, names = ds.read_classification(p)
    return recs, {"classes": names}


def load_task(cfg: FinetuneConfig) -> tuple[Task, TaskData]:
    """Read the data, split off the test set (hash of key, or of identity for recognition)."""
    records, info = _read(cfg, cfg.data)
    pairs = None
    if cfg.test:
        train = records
        test, test_info = _read(cfg, cfg.test)
        if "classes" in info and cfg.task == "classification" and test_info.get("classes") != info["classes"]:
            # re-index the test labels onto the training classes
            index = {c: i for i, c in enumerate(info["classes"])}
            unknown = {r["label"] for r in test if r["label"] not in index}
            if unknown:
                raise ValueError(f"{cfg.test}: labels not in the training data: {sorted(unknown)[:5]}")
            for r in test:
                r["target"] = index[r["label"]]
    elif cfg.task == "recognition":
        # open-set protocol: test identities never appear in training
        ident = {r["target"]: key_score(f"identity-{info['classes'][r['target']]}", cfg.split_seed + TEST_SALT)
                 for r in records}
        test = [r for r in records if ident[r["target"]] < cfg.test_fraction]
        train = [r for r in records if ident[r["target"]] >= cfg.test_fraction]
        if not test:   # tiny sets: at least one identity
            first = min(ident, key=ident.get)
            test = [r for r in records if r["target"] == first]
            train = [r for r in records if r["target"] != first]
    else:
        score = {r["key"]: key_score(r["key"], cfg.split_seed + TEST_SALT) for r in records}
        test = [r for r in records if score[r["key"]] < cfg.test_fraction]
        train = [r for r in records if score[r["key"]] >= cfg.test_fraction]
    if cfg.task == "recognition":
        pairs = ds.read_pairs(cfg.pairs) if cfg.pairs else ds.make_pairs(test, seed=cfg.split_seed)
        # re-number training identities densely (the CosFace prototypes cover training ids only)
        ids = sorted({r["target"] for r in train})
        dense = {t: i for i, t in enumerate(ids)}
        train = [dict(r, target=dense[r["target"]]) for r in train]
        info = dict(info, classes=[info["classes"][t] for t in ids])
    if not train or not test:
        raise ValueError(f"{cfg.data}: {len(train)} training and {len(test)} test samples; need both "
                         "(adjust --set test_fraction=... or pass --test)")
    if cfg.task == "landmarks":
        info["num_points"] = int(len(train[0]["target"]))
    task = TASK_TYPES[cfg.task](cfg, info)
    return task, TaskData(train=train, test=test, pairs=pairs, info=info)
