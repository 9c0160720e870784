"""Tiny datasets and configs for the fine-tuning tests (CPU, seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from facesift.finetune.config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_LANDMARKS = ROOT / "data" / "sample" / "landmarks5"


@pytest.fixture
def tiny_landmarks(tmp_path) -> Path:
    """60 labelled crops from the bundled sample, as a landmarks5 list with absolute paths."""
    lines = (SAMPLE_LANDMARKS / "train.txt").read_text().splitlines()[:60]
    out = tmp_path / "lm.txt"
    out.write_text("\n".join(str(SAMPLE_LANDMARKS / l.split()[0]) + " " + " ".join(l.split()[1:]) for l in lines) + "\n")
    return out


def tiny_cfg(tmp_path: Path, **kw) -> FinetuneConfig:
    cfg = FinetuneConfig(out=str(tmp_path / "ft"), image_size=32, seeds=1, fractions=[1.0, 0.5])
    cfg.search.steps = [3]
    cfg.search.lr = [1e-3]
    cfg.search.backbone_lr = [1.0]
    cfg.train.batch_size = 8
    cfg.train.eval_batch_size = 32
    cfg.train.workers = 0
    cfg.train.ckpt_every = 0      # the checkpoint test turns it on; elsewhere it only costs disk time
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads spinning against other
    processes' work are an order of magnitude slower than one."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
