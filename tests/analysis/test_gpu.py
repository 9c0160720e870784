"""CUDA paths (skipped without a GPU): backbone embedding under bf16 autocast matches CPU fp32."""
from __future__ import annotations

import numpy as np
import pytest

from facesift.analysis.config import EmbedConfig
from facesift.analysis.embed import embed_shards, load_embeddings
from tests.analysis.test_embed import _faces
from tests.analysis.conftest import write_shard


@pytest.mark.gpu
def test_cuda_backbone_embedding_matches_cpu(tmp_path):
    import torch
    from facesift.pretrain.backbone import build_resnet
    torch.save(build_resnet("resnet18").state_dict(), tmp_path / "backbone.pt")
    write_shard(tmp_path / "s" / "faces-000000.tar", _faces(24))
    rows = {}
    for device in ("cpu", "cuda"):
        cfg = EmbedConfig(backbone=str(tmp_path / "backbone.pt"), device=device, image_size=64, batch_size=8)
        embed_shards(tmp_path / "s", tmp_path / device, cfg, progress=False)
        rows[device] = np.asarray(load_embeddings(tmp_path / device)["emb"], np.float32)
    cos = (rows["cpu"] * rows["cuda"]).sum(1)
    assert cos.min() > 0.99     # bf16 autocast on CUDA vs fp32 on CPU
