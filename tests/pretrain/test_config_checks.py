"""Every numeric option of `facesift pretrain` is range-checked before any work (issue 12, defect 7).

A value that cannot train (no epochs, an empty batch, a zero temperature ...) used to run: 0
epochs finished with `loss=nan` and exit 0, `data.batch_size=0` died of ZeroDivisionError. Now
it is exit 2 with one line naming the field, and nothing is written in --out.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from facesift.cli import main as cli_main
from facesift.common.config import resolve
from facesift.pretrain.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    ("optim.epochs=0", "optim.epochs"),
    ("data.batch_size=0", "data.batch_size"),
    ("max_steps=1.5", "max_steps"),
    ("max_steps=-1", "max_steps"),
    ("crops.size_crops=[64,0]", "crops.size_crops"),
    ("crops.nmb_crops=[2,0]", "crops.nmb_crops"),
    ("crops.nmb_crops=[1] crops.size_crops=[64] crops.min_scale_crops=[0.3] crops.max_scale_crops=[1]",
     "crops.nmb_crops"),                                       # one crop: nothing to predict it from
    ("crops.size_crops=[64]", "crops"),                        # lists of different lengths
    ("crops.min_scale_crops=[0.5,0.4]", "crops"),              # min above max
    ("crops.max_scale_crops=[1.5,0.3]", "crops.max_scale_crops"),
    ("crops.jitter_p=1.5", "crops.jitter_p"),
    ("crops.flip_p=-0.1", "crops.flip_p"),
    ("crops.blur_sigma=[0,2]", "crops.blur_sigma"),
    ("crops.blur_sigma=[2,1]", "crops.blur_sigma"),
    ("crops.std=[0.2,0.0,0.2]", "crops.std"),
    ("crops.mean=[0.5,0.5]", "crops.mean"),
    ("optim.base_lr=-1", "optim.base_lr"),
    ("optim.final_lr=-0.1", "optim.final_lr"),
    ("optim.reference_batch=0", "optim.reference_batch"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.trust_coefficient=0", "optim.trust_coefficient"),
    ("swav.temperature=0", "swav.temperature"),
    ("swav.epsilon=0", "swav.epsilon"),
    ("swav.epsilon=.nan", "swav.epsilon"),
    ("swav.sinkhorn_iterations=0", "swav.sinkhorn_iterations"),
    ("swav.queue_length=-1", "swav.queue_length"),
    ("swav.crops_for_assign=[0,9]", "swav.crops_for_assign"),
    ("swav.crops_for_assign=[]", "swav.crops_for_assign"),
    ("model.nmb_prototypes=0", "model.nmb_prototypes"),
    ("model.feat_dim=0", "model.feat_dim"),
    ("model.hidden_mlp=-1", "model.hidden_mlp"),
    ("model.arch=vgg16", "model.arch"),
    ("data.workers=-1", "data.workers"),
    ("data.prefetch_factor=0", "data.prefetch_factor"),
    ("data.epoch_size=-5", "data.epoch_size"),
    ("data.shuffle_buffer=-1", "data.shuffle_buffer"),
    ("checkpoint_every=0", "checkpoint_every"),
    ("log_every=0", "log_every"),
    ("collapse_patience=0", "collapse_patience"),
    ("seed=-1", "seed"),
    ("device=gpu", "device"),
]


@pytest.mark.parametrize("override,field", BAD, ids=[b[0].split()[0] for b in BAD])
def test_a_bad_value_exits_2_naming_the_field_and_writes_nothing(tmp_path, capsys, override, field):
    out = tmp_path / "ckpt"
    shards = tmp_path / "no-shards-needed"  # the check comes before the shards are looked at
    sets = [arg for text in override.split() for arg in ("--set", text)]
    status = cli_main(["pretrain", "--shards", str(shards), "--out", str(out), "--config",
                       str(ROOT / "configs" / "cpu-tiny.yaml"), *sets])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()  # nothing written, not even the output folder


def test_nproc_checks_the_config_before_launching_torchrun(tmp_path, capsys, monkeypatch):
    import subprocess
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("torchrun launched"))
    status = cli_main(["pretrain", "--nproc", "2", "--shards", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--set", "optim.epochs=0"])
    assert status == 2 and "optim.epochs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                                           if "finetune:" not in p.read_text()))   # fine-tuning recipes: test_search.py
def test_presets_and_defaults_pass_the_checks(preset):
    cfg = resolve(PretrainConfig, ROOT / "configs" / preset, section="pretrain")
    cfg.check()
    PretrainConfig().check()


def test_programmatic_configs_are_checked_too(tmp_path):
    """`train(cfg)` with a hand-built config (tests, notebooks) gets the same checks as the CLI."""
    from facesift.pretrain.train import train
    cfg = PretrainConfig(shards=str(tmp_path), out=str(tmp_path / "o"))
    cfg.optim.epochs = 0
    with pytest.raises(ValueError, match="optim.epochs"):
        train(cfg)
    assert not (tmp_path / "o").exists()
