"""distributed_sinkhorn: constraints, equality with a plain NumPy transcription, fp32 under bf16."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facesift.pretrain.swav import distributed_sinkhorn


def numpy_sinkhorn(scores: np.ndarray, eps: float = 0.05, iters: int = 3) -> np.ndarray:
    """The algorithm as written in the SwAV paper/repo, in float64 NumPy, single process."""
    q = np.exp(scores.astype(np.float64) / eps).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def _scores(b: int, k: int, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


@pytest.mark.parametrize("b,k", [(32, 10), (64, 100), (16, 300)])
def test_matches_numpy_reference(b, k):
    s = _scores(b, k)
    q = distributed_sinkhorn(s, 0.05, 3)
    ref = numpy_sinkhorn(s.numpy())
    assert q.dtype == torch.float32
    np.testing.assert_allclose(q.numpy(), ref, atol=1e-5, rtol=1e-5)


def test_constraints():
    b, k = 64, 16
    q = distributed_sinkhorn(_scores(b, k), 0.05, 3)
    # columns (per sample) are exact after the last step: each code is a distribution
    np.testing.assert_allclose(q.sum(dim=1).numpy(), np.ones(b), atol=1e-5)
    # rows (per prototype) approach equipartition B/K; more iterations get closer
    rows3 = q.sum(dim=0).numpy()
    rows50 = distributed_sinkhorn(_scores(b, k), 0.05, 50).sum(dim=0).numpy()
    assert np.abs(rows50 - b / k).max() < 1e-3
    assert np.abs(rows3 - b / k).max() < np.abs(torch.softmax(_scores(b, k) / 0.05, 1).sum(0).numpy() - b / k).max()
    assert (q >= 0).all()


def test_finite_at_edge_of_range_under_bf16_autocast():
    b, k = 32, 50
    s = _scores(b, k)
    s[0, 0], s[1, 3], s[2] = 1.0, -1.0, 1.0  # saturated cosine scores
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = (s.to(torch.bfloat16) * 1.0)      # what the model emits under autocast
        q = distributed_sinkhorn(scores, 0.05, 3)
        q_tight = distributed_sinkhorn(scores * 10, 0.01, 3)  # exp(1000) without the max shift
    for out in (q, q_tight):
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
        np.testing.assert_allclose(out.sum(dim=1).numpy(), np.ones(b), atol=1e-4)
    ref = numpy_sinkhorn(scores.float().numpy())
    np.testing.assert_allclose(q.numpy(), ref, atol=1e-5)
