"""backbone.pt and torchvision-format checkpoints load into a plain ResNet trunk."""
from __future__ import annotations

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
