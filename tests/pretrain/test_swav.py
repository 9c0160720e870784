"""The method pieces: loss against a direct transcription, queue handling, prototypes, model."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from facesift.pretrain.swav import (CollapseWatch, SwAVModel, SwAVStats, distributed_sinkhorn, drop_prototype_grads,
                           make_queue, normalize_prototypes, prototype_scores, swav_loss)


def _inputs(bs=8, crops=4, d=16, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(bs * crops, d, generator=g), dim=1)
    protos = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z, z @ protos.t(), protos


def test_loss_is_the_swapped_prediction_of_eq1():
    bs, crops = 8, 4
    z, scores, protos = _inputs(bs, crops)
    loss, _, stats = swav_loss(z, scores, bs, crops, protos, (0, 1))
    expected = 0.0
    for a in (0, 1):
        q = distributed_sinkhorn(scores[a * bs:(a + 1) * bs])
        terms = [-(q * F.log_softmax(scores[v * bs:(v + 1) * bs] / 0.1, dim=1)).sum(1).mean()
                 for v in range(crops) if v != a]
        expected += sum(terms) / (crops - 1)
    torch.testing.assert_close(loss, expected / 2)
    assert abs(stats.loss - float(loss)) < 1e-6 and 0 < stats.entropy <= math.log(10) + 1e-6


def test_queue_fills_then_is_used_only_when_full():
    bs, crops, d, k = 4, 3, 16, 10
    queue = make_queue(10, 2, d, global_batch=bs, world_size=1)
    assert queue.shape == (2, 8, d)  # 10 rounded down to a multiple of the global batch
    z, scores, protos = _inputs(bs, crops, d, k)
    loss_plain, _, _ = swav_loss(z, scores, bs, crops, protos, (0, 1))
    loss1, used, _ = swav_loss(z, scores, bs, crops, protos, (0, 1), queue=queue, use_queue=False)
    assert not used and torch.allclose(loss1, loss_plain)          # not full: not used
    torch.testing.assert_close(queue[0, :bs], z[:bs])               # newest embeddings first
    z2, scores2, _ = _inputs(bs, crops, d, k, seed=1)
    _, used, _ = swav_loss(z2, z2 @ protos.t(), bs, crops, protos, (0, 1), queue=queue, use_queue=False)
    assert not used and torch.all(queue[1, -1] != 0)               # now full
    loss3, used, _ = swav_loss(z, scores, bs, crops, protos, (0, 1), queue=queue, use_queue=False)
    assert used and not torch.allclose(loss3, loss_plain)
    # (the codes it then gives: test_queue_codes_slots_latch_and_epoch_reset)
    assert make_queue(3, 2, d, global_batch=4, world_size=1) is None   # shorter than one batch: none


def test_model_groups_crops_and_prototypes_stay_on_sphere():
    model = SwAVModel("resnet18", hidden_mlp=32, feat_dim=8, nmb_prototypes=5)
    calls = []
    model.backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    crops = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 3
    z, scores = model(crops)
    assert calls == [(4, 3, 32, 32), (6, 3, 16, 16)]            # one trunk pass per resolution
    assert z.shape == (10, 8) and scores.shape == (10, 5)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(10))
    scores.sum().backward()
    drop_prototype_grads(model)
    with torch.no_grad():
        model.prototypes.weight.mul_(3)
    normalize_prototypes(model)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(5))
    assert model.prototypes.weight.grad is None and model.backbone.conv1.weight.grad is not None


def test_collapse_watch_flags_loss_at_ln_k_and_concentration():
    watch = CollapseWatch(100, warmup_steps=5, patience=10)
    flat = SwAVStats(loss=math.log(100), entropy=4.6, prototypes_used=60, max_share=0.05)
    messages = [watch.update(s, flat) for s in range(30)]
    assert sum(m is not None for m in messages) == 1 and "ln K" in watch.warnings[0]
    watch = CollapseWatch(100, warmup_steps=0, patience=5)
    peaked = SwAVStats(loss=2.0, entropy=0.1, prototypes_used=1, max_share=1.0)
    assert any(watch.update(s, peaked) for s in range(6)) and "one prototype" in watch.warnings[0]
    healthy = CollapseWatch(100, warmup_steps=0, patience=5)
    ok = SwAVStats(loss=2.0, entropy=2.0, prototypes_used=40, max_share=0.1)
    assert not any(healthy.update(s, ok) for s in range(20))
    early = SwAVStats(loss=math.log(100) + 1.5, entropy=2.0, prototypes_used=40, max_share=0.1)
    assert not any(healthy.update(s, early) for s in range(20))  # above ln K: still descending


def test_prototype_scores_and_codes_are_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(3)
    z = F.normalize(torch.randn(64, 32, generator=g), dim=1)
    w = F.normalize(torch.randn(300, 32, generator=g), dim=1).requires_grad_()
    exact = z @ w.detach().t()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = z @ w.detach().t()                       # what the head did before
        scores = prototype_scores(z, w)
    assert naive.dtype == torch.bfloat16 and scores.dtype == torch.float32
    assert (naive.float() - exact).abs().max() > 1e-3   # bf16 is visibly off ...
    torch.testing.assert_close(scores, exact, atol=1e-6, rtol=0)   # ... the fp32 scores are not
    codes = lambda s: distributed_sinkhorn(s.float(), 0.05, 3)
    assert (codes(naive) - codes(exact)).abs().max() > 1e-3
    torch.testing.assert_close(codes(scores), codes(exact), atol=1e-5, rtol=0)
    scores.sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
    # the model's forward under autocast gives the same fp32 scores as its embeddings times W
    model = SwAVModel("resnet18", hidden_mlp=32, feat_dim=8, nmb_prototypes=5).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zz, ss = model([torch.randn(2, 3, 32, 32, generator=g)])
    assert ss.dtype == torch.float32
    torch.testing.assert_close(ss, zz.float() @ model.prototypes.weight.detach().t(), atol=1e-6, rtol=0)


def test_queue_codes_slots_latch_and_epoch_reset():
    from facesift.pretrain.checkpoint import RunState
    bs, crops, d, k = 4, 3, 16, 10
    queue = make_queue(8, 2, d, global_batch=bs, world_size=1)
    z, scores, protos = _inputs(bs, crops, d, k)
    old = F.normalize(torch.randn(2, 8, d, generator=torch.Generator().manual_seed(5)), dim=2)
    queue.copy_(old)                                                 # a full queue
    loss, used, _ = swav_loss(z, scores, bs, crops, protos, (0, 1), queue=queue, use_queue=False)
    assert used
    # the batch codes are the last bs rows of Sinkhorn over [queue scores; batch scores] ...
    expected = 0.0
    for i, a in enumerate((0, 1)):
        q = distributed_sinkhorn(torch.cat((old[i] @ protos.t(), scores[a * bs:(a + 1) * bs])))[-bs:]
        assert not torch.allclose(q, distributed_sinkhorn(scores[a * bs:(a + 1) * bs]))
        expected += sum(-(q * F.log_softmax(scores[v * bs:(v + 1) * bs] / 0.1, dim=1)).sum(1).mean()
                        for v in range(crops) if v != a) / (crops - 1)
    torch.testing.assert_close(loss, expected / 2)
    # ... and the queue shifted by one batch: the newest embeddings of crop a first, the oldest gone
    for i, a in enumerate((0, 1)):
        torch.testing.assert_close(queue[i, :bs], z[a * bs:(a + 1) * bs])
        torch.testing.assert_close(queue[i, bs:], old[i, :-bs])
    # latched: once used it stays used, even with rows at zero (as the reference, within an epoch)
    queue[:, -1] = 0
    _, used, _ = swav_loss(z, scores, bs, crops, protos, (0, 1), queue=queue, use_queue=True)
    assert used
    _, used, _ = swav_loss(z, scores, bs, crops, protos, (0, 1), queue=queue.zero_(), use_queue=False)
    assert not used                                                  # not latched, not full: unused
    # a new epoch resets the latch
    state = RunState(stream=None, use_queue=True)
    state.next_epoch(workers=0)
    assert state.use_queue is False and state.epoch == 1
