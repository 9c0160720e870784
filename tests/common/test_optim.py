"""common/optim.py: the fused AdamW is the same optimiser, and its checkpoints cross over."""
from __future__ import annotations

import io

import torch

from facesift.common.optim import adamw, can_fuse


def _model(seed: int = 0) -> torch.nn.Module:
    # no conv bias before the norm: its gradient is rounding noise, which Adam scales up to a step
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 4))


def _steps(model, opt, n: int = 5) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def _groups(model):
    ps = list(model.parameters())
    return [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 1e-3}]


def test_cpu_parameters_get_the_fused_kernel():
    opt = adamw(_groups(_model()), weight_decay=1e-4)
    assert opt.defaults["fused"] is True
    assert not can_fuse([torch.zeros(2, dtype=torch.int64)])
    assert not can_fuse([])


def test_fused_matches_torchs_default_loop():
    a, b = _model(), _model()
    _steps(a, adamw(_groups(a), weight_decay=1e-2))
    _steps(b, torch.optim.AdamW(_groups(b), weight_decay=1e-2, foreach=False))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), _model().parameters()))


def test_a_loop_checkpoint_resumes_in_the_fused_kernel():
    """Checkpoints written before the fused kernel (or on a device without it) keep loading."""
    ref, resumed = _model(), _model()
    loop = torch.optim.AdamW(_groups(ref), weight_decay=1e-2, foreach=False)
    _steps(ref, loop, 3)
    resumed.load_state_dict(ref.state_dict())
    fused = adamw(_groups(resumed), weight_decay=1e-2)
    saved = io.BytesIO()   # through bytes, as a checkpoint: a live state_dict shares its step tensors
    torch.save(loop.state_dict(), saved)
    saved.seek(0)
    fused.load_state_dict(torch.load(saved))
    _steps(ref, loop, 3)
    _steps(resumed, fused, 3)
    for pa, pb in zip(ref.parameters(), resumed.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)
