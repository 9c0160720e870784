"""Self-distillation for the semi-supervised case (paper 3.5).

A model fine-tuned on the few labels becomes the teacher; a student of the same size,
initialised from the *pretrained* backbone (not from the teacher), is trained on an unlabelled
pool whose targets the teacher produces online, on the very augmented batch the student sees
(heatmaps for landmarks, soft class posteriors for classification, values/embeddings for
regression/recognition). Repeated T times, each student becoming the next teacher:
argmin_θt L(f(x, θ_{t-1}), f(x, θ_t)). The labelled loss is kept alongside, weighted by
`distill_labelled_weight` (0 reproduces the pure form).
"""
from __future__ import annotations

import logging

from facesift.finetune import datasets as ds
from facesift.finetune import trainer
from facesift.finetune.config import FinetuneConfig
from facesift.finetune.trainer import HParams

log = logging.getLogger(__name__)


def unlabelled_pool(cfg: FinetuneConfig, training_pool: list[dict]) -> list[dict]:
    """Images without labels: 'pool' = the whole training pool (its labels dropped), else a
    folder or a list of images. The test split is never part of 'pool'.

    A pool record keeps its face `box` (`.pts` datasets): the transforms crop to it, so the
    teacher and student see the face as framed in the labelled and test data, not the whole
    photo. Folder and list images have no box and are used whole.
    """
    if cfg.unlabelled == "pool":
        keep = ("key", "path", "box")
        return [dict({k: r[k] for k in keep if k in r}, target=None) for r in training_pool]
    return ds.list_images(cfg.unlabelled)


def self_distill(cfg: FinetuneConfig, task, teacher, labelled: list[dict], unlabelled: list[dict],
                 init: str, hp: HParams, seed: int, device=None) -> tuple[object, list[dict]]:
    """T rounds; returns the last student and per-round loss summaries."""
    history = []
    for round_ in range(1, cfg.distill + 1):
        round_seed = seed + 1000 * round_
        student = trainer.build_model(task, init, cfg.arch, cfg.adapt, seed=round_seed)
        losses = trainer.train(student, task, labelled, hp, cfg.train, seed=round_seed, device=device,
                               teacher=teacher, unlabelled=unlabelled,
                               labelled_weight=cfg.distill_labelled_weight)
        history.append({"round": round_, "first_loss": losses[0], "final_loss": losses[-1]})
        log.info("self-distillation round %d/%d: loss %.4g -> %.4g", round_, cfg.distill, losses[0], losses[-1])
        teacher = student
    return teacher, history
