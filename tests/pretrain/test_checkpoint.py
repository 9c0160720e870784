"""Checkpoints written with `compile: true` carry plain keys, so they resume and load anywhere."""
from __future__ import annotations

import torch

from facesift.pretrain.backbone import build_resnet
from facesift.pretrain.checkpoint import plain_state_dict
from facesift.pretrain.swav import SwAVModel


def test_compiled_backbone_state_dict_has_plain_keys():
    model = SwAVModel("resnet18", hidden_mlp=16, feat_dim=8, nmb_prototypes=5)
    model.backbone = torch.compile(model.backbone)          # wraps lazily: nothing is compiled here
    raw = model.state_dict()
    assert any("_orig_mod." in k for k in raw)              # what last.pt held before
    plain = plain_state_dict(model)
    assert not any("_orig_mod." in k for k in plain) and len(plain) == len(raw)
    fresh = SwAVModel("resnet18", hidden_mlp=16, feat_dim=8, nmb_prototypes=5)
    fresh.load_state_dict(plain)                             # strict: --resume loads before compiling
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, plain[k])
    build_resnet("resnet18").load_state_dict(plain_state_dict(model.backbone), strict=False)
    assert set(plain_state_dict(model.backbone)) == set(build_resnet("resnet18").state_dict()) - {"fc.weight", "fc.bias"}
