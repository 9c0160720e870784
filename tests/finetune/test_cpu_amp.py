"""train.cpu_amp: training steps and evaluation forwards run in bf16 on CPUs with native bf16
(fp32 elsewhere, where emulated bf16 is many times slower); the outputs are decoded in fp32."""
from __future__ import annotations

import math

import pytest
import torch

from facesift.finetune import trainer
from facesift.finetune.tasks import load_task
from facesift.finetune.trainer import HParams

from tests.finetune.conftest import tiny_cfg


def _conv_dtypes(model):
    seen = []
    model.trunk.conv1.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("native", [True, False])
def test_cpu_amp_trains_and_predicts_in_bf16_where_native(tmp_path, tiny_landmarks, monkeypatch, native):
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: native)
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    task, split = load_task(cfg)
    for cpu_amp, want in ((False, torch.float32), (True, torch.bfloat16 if native else torch.float32)):
        cfg.train.cpu_amp = cpu_amp
        model = trainer.build_model(task, "scratch", "resnet18")
        seen = _conv_dtypes(model)
        losses = trainer.train(model, task, split.train, HParams(1e-3, 3, 1.0), cfg.train, seed=0,
                               device=torch.device("cpu"))
        assert set(seen) == {want} and all(math.isfinite(v) for v in losses)
        seen.clear()
        preds, _ = trainer.predict(model, task, split.test[:4], cfg.train, device=torch.device("cpu"))
        assert set(seen) == {want} and preds.dtype.name == "float32"
