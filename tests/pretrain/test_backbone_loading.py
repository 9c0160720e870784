"""backbone.pt and torchvision-format checkpoints load into a plain ResNet trunk."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from facesift.pretrain.backbone import build_resnet, clean_state_dict, infer_arch, load_backbone


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_infer_arch(arch):
    sd = torchvision.models.get_model(arch).state_dict()
    assert infer_arch(sd) == arch


def test_wrapped_checkpoint_loads(tmp_path):
    src = torchvision.models.resnet18()
    wrapped = {"state_dict": {"module.backbone." + k: v for k, v in src.state_dict().items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, path)
    model = load_backbone(path)
    x = torch.randn(1, 3, 64, 64)
    src.fc = torch.nn.Identity()
    src.eval(), model.eval()
    assert torch.allclose(model(x), src(x))
    assert "fc.weight" not in clean_state_dict(wrapped)


def test_mismatched_weights_are_a_clear_error(tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(build_resnet("resnet18").state_dict(), path)
    with pytest.raises(ValueError, match="do not match resnet50"):
        load_backbone(path, arch="resnet50")


# --- files that are not backbones (issue 12, defect 9) -------------------------------------------
# torch's own error for most of these is an UnpicklingError advising `weights_only=False`: unsafe
# for a file from the web. The loader never gives that advice and never loads unsafely.

class _Mkdir:
    """Pickles as a call of os.mkdir: loading it unsafely would create `path`."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        import os
        return os.mkdir, (self.path,)


def _bad_files(tmp_path):
    real = tmp_path / "real.pt"
    torch.save(build_resnet("resnet18").state_dict(), real)
    data = real.read_bytes()
    files = {
        # seeded: os.urandom bytes began with a pickle's 0x80 in 1 run of 256 (that case is its own)
        "random": (b"\x17" + np.random.default_rng(0).bytes(4095), "not a zip/pickle file"),
        "pickle-junk": (b"\x80" + np.random.default_rng(1).bytes(4095), "a pickle, but not one torch.save wrote"),
        "empty": (b"", "empty file"),
        "truncated": (data[: len(data) // 2], "truncated"),
        "text": (b"hello, this is a README\n" * 10, "not a zip/pickle file"),
    }
    out = {}
    for name, (content, reason) in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        out[name] = (path, reason)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    out["list"] = (tmp_path / "list.pt", "holds a list, not a state_dict")
    torch.save(torch.nn.Linear(4, 3).state_dict(), tmp_path / "linear.pt")
    out["other-model"] = (tmp_path / "linear.pt", "no ResNet weights (keys: weight, bias)")
    torch.save({"conv1.weight": _Mkdir(str(tmp_path / "PWNED"))}, tmp_path / "evil.pt")
    out["evil"] = (tmp_path / "evil.pt", "posix.mkdir")
    return out


@pytest.mark.parametrize("kind", ["random", "pickle-junk", "empty", "truncated", "text", "list", "other-model",
                                  "evil"])
def test_a_file_that_is_no_backbone_is_named_with_its_reason(tmp_path, kind):
    from facesift.pretrain.backbone import NotACheckpoint
    path, reason = _bad_files(tmp_path)[kind]
    with pytest.raises(NotACheckpoint) as info:
        load_backbone(path)
    text = str(info.value)
    assert text.startswith(f"not a facesift/torchvision checkpoint: {path} (") and reason in text, text
    assert "weights_only" not in text and "\n" not in text
    assert isinstance(info.value, ValueError)  # the commands' "user's to fix" errors: exit 2
    assert not (tmp_path / "PWNED").exists()   # nothing in the file was run


def test_finetune_and_embed_refuse_a_bad_backbone_with_exit_2(tmp_path, capsys):
    """Both commands go through load_backbone: one line, exit 2, no traceback."""
    from facesift.cli import main as cli_main
    from tests.analysis.conftest import write_shard
    from tests.finetune.conftest import SAMPLE_LANDMARKS
    from PIL import Image

    bad = _bad_files(tmp_path)["evil"][0]
    lines = (SAMPLE_LANDMARKS / "train.txt").read_text().splitlines()[:16]
    data = tmp_path / "lm.txt"
    data.write_text("\n".join(str(SAMPLE_LANDMARKS / l.split()[0]) + " " + " ".join(l.split()[1:])
                              for l in lines) + "\n")
    status = cli_main(["finetune", "--task", "landmarks", "--data", str(data), "--inits", str(bad),
                       "--fractions", "1", "--seeds", "1", "--image-size", "32", "--out", str(tmp_path / "ft"),
                       "--set", "search.steps=[2]", "--set", "train.batch_size=8", "--set", "train.workers=0"])
    captured = capsys.readouterr()
    assert status == 2, captured.err[-2000:]
    assert f"not a facesift/torchvision checkpoint: {bad}" in captured.err
    assert "Traceback" not in captured.err and "weights_only" not in captured.err

    images = sorted((SAMPLE_LANDMARKS / "images").glob("*.jpg"))[:4]
    write_shard(tmp_path / "shards" / "faces-000000.tar",
                [(f"k{i}", Image.open(p).convert("RGB"), {}) for i, p in enumerate(images)])
    status = cli_main(["embed", "--shards", str(tmp_path / "shards"), "--out", str(tmp_path / "emb"),
                       "--backbone", str(bad), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 2, captured.err[-2000:]
    assert f"not a facesift/torchvision checkpoint: {bad}" in captured.err
    assert "Traceback" not in captured.err and "weights_only" not in captured.err
    assert not (tmp_path / "PWNED").exists()
