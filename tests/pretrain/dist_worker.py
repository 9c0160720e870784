"""Run under `python -m torch.distributed.run --nproc_per_node=2` by test_distributed.py (gloo, CPU).

1. Each rank computes distributed_sinkhorn on its half of one fixed score matrix and saves it.
2. Both ranks train a few steps on deliberately uneven shards and save how many steps they ran.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from facesift.pretrain.config import CropConfig, DataConfig, ModelConfig, OptimConfig, PretrainConfig, SwAVConfig
from facesift.pretrain.swav import distributed_sinkhorn
from facesift.pretrain.train import train


def main(shards: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(2 * 12, 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=1)
    scores = (z @ c.t())[rank * 12:(rank + 1) * 12]
    torch.save(distributed_sinkhorn(scores, 0.05, 3), Path(out) / f"codes{rank}.pt")

    cfg = PretrainConfig(
        shards=shards, out=str(Path(out) / "ckpt"), device="cpu", amp=False, seed=0, log_every=1,
        checkpoint_every=3, max_steps=5,
        model=ModelConfig(arch="resnet18", hidden_mlp=32, feat_dim=16, nmb_prototypes=10),
        crops=CropConfig(nmb_crops=[2, 1], size_crops=[32, 16], min_scale_crops=[0.3, 0.1], max_scale_crops=[1, 0.3]),
        swav=SwAVConfig(freeze_prototypes_niters=1, queue_length=16, epoch_queue_starts=0),
        optim=OptimConfig(epochs=2, base_lr=0.1, reference_batch=8, final_lr=0.01, warmup_epochs=0),
        data=DataConfig(batch_size=4, workers=1, resampled=False, shuffle_buffer=4, epoch_size=24))
    result = train(cfg)  # destroys the process group at the end
    (Path(out) / f"steps{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
