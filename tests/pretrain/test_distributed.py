"""Two gloo ranks under torchrun: global Sinkhorn codes, and equal steps on uneven shards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facesift.pretrain.swav import distributed_sinkhorn
from tests.pretrain.conftest import write_shards

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_two_rank_torchrun(face_files, tmp_path):
    shards = tmp_path / "shards"
    write_shards(face_files, shards, [3, 45])  # rank 0 gets 3 samples, rank 1 gets 45
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests/pretrain/dist_worker.py"), str(shards), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # codes computed by 2 ranks == codes of one process on the concatenated batch
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(24, 16, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(20, 16, generator=g), dim=1)
    single = distributed_sinkhorn(z @ c.t(), 0.05, 3)
    both = torch.cat([torch.load(tmp_path / f"codes{r}.pt") for r in (0, 1)])
    torch.testing.assert_close(both, single, atol=1e-6, rtol=1e-5)
    local_only = torch.cat([distributed_sinkhorn((z @ c.t())[r * 12:(r + 1) * 12]) for r in (0, 1)])
    assert not torch.allclose(local_only, single, atol=1e-4)  # the all-reduce matters

    # uneven shards: both ranks ran the same 5 steps (else DDP would have hung)
    results = [json.loads((tmp_path / f"steps{r}.json").read_text()) for r in (0, 1)]
    assert [r["new_steps"] for r in results] == [5, 5]
    ck = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=False)
    assert ck["world_size"] == 2 and len(ck["ranks"]) == 2 and ck["step"] == 5
    assert all(r["queue"].shape == (2, 8, 16) for r in ck["ranks"])
    assert (tmp_path / "ckpt" / "backbone.pt").exists()
