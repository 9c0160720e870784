"""Training end to end on real face crops: learning, exact resume, the backbone.pt contract."""
from __future__ import annotations

import csv
import math

import pytest
import torch
import torchvision
import yaml

from facesift.pretrain.backbone import load_backbone
from facesift.pretrain.config import CropConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig, SwAVConfig
from facesift.pretrain.train import train
from facesift.cli import main as cli_main
from facesift.common.config import to_dict


def tiny(shards, out, **kw) -> PretrainConfig:
    cfg = PretrainConfig(
        shards=str(shards), out=str(out), device="cpu", amp=False, seed=0, log_every=1, checkpoint_every=100,
        model=ModelConfig(arch="resnet18", hidden_mlp=32, feat_dim=16, nmb_prototypes=10),
        crops=CropConfig(nmb_crops=[2, 1], size_crops=[32, 16], min_scale_crops=[0.3, 0.1], max_scale_crops=[1, 0.3]),
        swav=SwAVConfig(freeze_prototypes_niters=2, queue_length=8, epoch_queue_starts=0),
        optim=OptimConfig(epochs=3, base_lr=0.5, reference_batch=4, final_lr=0.05, warmup_epochs=0.5),
        data=DataConfig(batch_size=4, workers=3, shuffle_buffer=20, epoch_size=12))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.timeout(900)
def test_resume_equals_uninterrupted_and_backbone_loads(face_shards, tmp_path):
    straight = train(tiny(face_shards, tmp_path / "a", max_steps=4))
    assert straight["steps"] == 4

    # first half through the CLI with a YAML config, then `--resume` for the rest
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": to_dict(tiny(face_shards, tmp_path / "b"))}))
    base = ["pretrain", "--shards", str(face_shards), "--out", str(tmp_path / "b"), "--config", str(cfg_file)]
    assert cli_main(base + ["--set", "max_steps=2"]) == 0  # mid-epoch; 2 % 3 workers: round robin rotates
    half = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert half["step"] == 2 and half["ranks"][0]["stream"]["steps"] == 2
    assert cli_main(base + ["--set", "max_steps=4", "--resume"]) == 0

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 4 and a["epoch"] == b["epoch"] == 1
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-5, rtol=1e-5, msg=k)
    torch.testing.assert_close(a["ranks"][0]["queue"], b["ranks"][0]["queue"], atol=1e-5, rtol=1e-5)
    with open(tmp_path / "b" / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, 5))
    # re-running a finished run resumes and finishes immediately
    assert cli_main(base + ["--set", "max_steps=4", "--resume"]) == 0
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["step"] == 4

    # backbone.pt: a plain torchvision state_dict, only fc missing
    sd = torch.load(tmp_path / "b" / "backbone.pt", weights_only=True)
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    torch.testing.assert_close(net.conv1.weight, b["model"]["backbone.conv1.weight"])
    assert load_backbone(tmp_path / "b" / "backbone.pt").feature_dim == 512
    assert (tmp_path / "b" / "pretrain.yaml").exists() and list((tmp_path / "b" / "tb").glob("events.*"))


def _learning_run(face_shards, out, steps, on_device=False):
    cfg = tiny(face_shards, out, max_steps=steps, log_every=5, collapse_warmup_steps=10, collapse_patience=10)
    cfg.model = ModelConfig(arch="resnet18", hidden_mlp=256, feat_dim=16, nmb_prototypes=64)
    # photometric augmentation off, crop scales gentler: at batch 32 and a few hundred steps the
    # full SwAV colour/blur/grayscale recipe drives the codes to ln K (measured, also with
    # torchvision's own transforms); geometry alone keeps the task learnable at this scale
    cfg.crops = CropConfig(nmb_crops=[2, 2], size_crops=[32, 16], min_scale_crops=[0.3, 0.1],
                           max_scale_crops=[1.0, 0.3], jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    cfg.swav = SwAVConfig(freeze_prototypes_niters=10)
    cfg.optim = OptimConfig(epochs=20, base_lr=1.0, reference_batch=32, final_lr=0.1, start_warmup=0,
                            warmup_epochs=0.3)
    cfg.data = DataConfig(batch_size=32, workers=1, shuffle_buffer=200, augment_on_device=on_device)
    result = train(cfg)
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return result, rows


@pytest.mark.timeout(900)
# the on-device crops' own checks are in test_data.py; their learning run is `make test-all`
@pytest.mark.parametrize("on_device", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["crops-in-workers", "crops-on-device"])
def test_loss_falls_and_codes_stay_spread(face_shards, tmp_path, on_device):
    """30 steps on real faces: the loss falls clearly from where it starts, the codes keep using
    many prototypes, nothing concentrates and the collapse watch stays quiet — with the crops
    cut in the workers (CPU presets) and on the training device (GPU presets). (Measured on
    this machine: 6.44 → 4.44 over 30 steps with ln K = 4.16.)"""
    result, rows = _learning_run(face_shards, tmp_path, 30, on_device)
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0] - 1.0, losses
    assert result["collapse_warnings"] == 0
    assert all(int(r["prototypes_used"]) >= 16 and float(r["max_share"]) < 0.5 for r in rows)
    assert all(float(r["images_per_s"]) > 0 and 0 <= float(r["data_wait"]) <= 1 for r in rows)


@pytest.mark.slow   # `make test-all`: 90 s where written; it ran past 15 min on a loaded 2-core AMD EPYC
@pytest.mark.timeout(900)
def test_loss_falls_well_below_ln_k_long(face_shards, tmp_path):
    """The issue's criterion: 400 steps on real faces end well below ln K with no collapse
    warning (measured: under ln K - 0.5 with 2 threads in about 90 s). The 30-step test above
    keeps the learning check in `make test`."""
    result, rows = _learning_run(face_shards, tmp_path, 400)
    tail = [float(r["loss"]) for r in rows[-3:]]
    assert max(tail) < math.log(64) - 0.5, tail
    assert result["collapse_warnings"] == 0


def test_bf16_autocast_on_cpu(face_shards, tmp_path):
    """`amp: true` on a CPU: bf16 autocast where the CPU runs it natively (fp32 elsewhere); the
    codes and the loss stay finite and checkpoints load as usual."""
    from facesift.pretrain.train import bf16_native

    result = train(tiny(face_shards, tmp_path, max_steps=3, amp=True))
    assert result["steps"] == 3 and math.isfinite(result["loss"])
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert all(v.dtype != torch.bfloat16 for v in ck["model"].values())  # weights stay fp32 under autocast
    assert isinstance(bf16_native(torch.device("cpu")), bool) and bf16_native(torch.device("cuda"))


def test_an_existing_checkpoint_needs_resume_or_restart(face_shards, tmp_path, capsys):
    """Re-running a command without --resume must not silently start over on top of a run."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": to_dict(tiny(face_shards, tmp_path / "run", max_steps=2))}))
    base = ["pretrain", "--shards", str(face_shards), "--out", str(tmp_path / "run"), "--config", str(cfg_file)]
    assert cli_main(base) == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    capsys.readouterr()
    assert cli_main(base + ["--set", "max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "last.pt exists (step 2)" in err and "--resume" in err and "--restart" in err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # untouched
    assert cli_main(base + ["--set", "max_steps=1", "--restart"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 1  # started over
    with pytest.raises(SystemExit):  # one or the other
        cli_main(base + ["--resume", "--restart"])


@pytest.mark.timeout(900)
def test_adamw_resumes_exactly(face_shards, tmp_path):
    """optim.adamw (the cpu-fewshot recipe): AdamW's moments travel in last.pt, so 2 + 2 steps
    with --resume equal 4 straight steps; a checkpoint from the other optimiser is refused."""
    def adamw(out, **kw):
        cfg = tiny(face_shards, out, **kw)
        cfg.optim.adamw, cfg.optim.base_lr, cfg.optim.final_lr, cfg.optim.exclude_bn_bias = True, 1e-3, 1e-5, True
        cfg.optim.weight_decay = 1e-4
        return cfg
    straight = train(adamw(tmp_path / "a", max_steps=4))
    assert straight["steps"] == 4
    train(adamw(tmp_path / "b", max_steps=2))
    train(adamw(tmp_path / "b", max_steps=4), resume=True)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert "exp_avg_sq" in next(iter(a["optimizer"]["state"].values()))
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, atol=1e-5, rtol=1e-5, msg=k)
    with pytest.raises(ValueError, match="adamw"):
        train(tiny(face_shards, tmp_path / "b", max_steps=6), resume=True)


def test_cpu_fewshot_preset_keeps_the_photometric_recipe():
    """The documented few-shot preset: the paper's colour jitter / grayscale / blur on, AdamW."""
    from facesift.common.config import resolve
    from pathlib import Path
    cfg = resolve(PretrainConfig, Path(__file__).parents[2] / "configs" / "cpu-fewshot.yaml", section="pretrain").check()
    assert cfg.crops.jitter_p == 0.8 and cfg.crops.grayscale_p == 0.2 and cfg.crops.blur_p == 0.5
    assert cfg.optim.adamw and cfg.data.batch_size == 128 and cfg.model.nmb_prototypes == 300
