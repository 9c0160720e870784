"""LARS, the LR schedule and the multi-crop transform."""
from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from facesift.pretrain.config import CropConfig
from facesift.pretrain.multicrop import (augment_batch, collate_crops, collate_images, colour_matrix, crop_plan, cut_crops,
                                geometric_crops, image_and_boxes, photometric)
from facesift.pretrain.optim import LARS, lr_at, param_groups, scaled_lr


def test_schedule_warmup_then_cosine_to_final():
    kw = dict(total_steps=100, warmup_steps=10, base_lr=4.8, final_lr=0.0048, start_warmup=0.3)
    assert lr_at(0, **kw) == pytest.approx(0.3)
    assert lr_at(10, **kw) == pytest.approx(4.8)
    assert lr_at(55, **kw) == pytest.approx(0.0048 + 0.5 * (4.8 - 0.0048))
    assert lr_at(100, **kw) == pytest.approx(0.0048)
    assert all(lr_at(s, **kw) >= lr_at(s + 1, **kw) for s in range(10, 100))
    assert scaled_lr(4.8, 256, 4096) == pytest.approx(0.3)


def test_lars_trust_ratio_and_bn_bias_exclusion():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = param_groups(model, 1e-4, exclude_bn_bias=True)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0
    w = model[0].weight
    w.grad = torch.full_like(w, 0.5)
    model[0].bias.grad = torch.full_like(model[0].bias, 0.5)
    before_w, before_b = w.detach().clone(), model[0].bias.detach().clone()
    opt = LARS(groups, lr=1.0, momentum=0.9, weight_decay=1e-4, trust_coefficient=0.001)
    opt.step()
    trust = 0.001 * before_w.norm() / (w.grad.norm() + 1e-4 * before_w.norm())
    expected = before_w - trust * (w.grad + 1e-4 * before_w)
    torch.testing.assert_close(w.detach(), expected)
    torch.testing.assert_close(model[0].bias.detach(), before_b - 0.5)  # plain SGD: no trust, no wd


def _jpeg(path, size=None) -> bytes:
    img = Image.open(path).convert("RGB")
    if size:
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_crops_shapes_determinism_and_draft_decode(face_files):
    cfg = CropConfig(nmb_crops=[2, 4], size_crops=[64, 32])
    plan = crop_plan(cfg)
    data = _jpeg(face_files[0])
    a = geometric_crops(data, plan, random.Random(1))
    b = geometric_crops(data, plan, random.Random(1))
    assert [x.shape for x in a] == [(64, 64, 3)] * 2 + [(32, 32, 3)] * 4
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    # a big image whose crops all shrink ≥2× is decoded at a reduced JPEG scale — same content
    big = _jpeg(face_files[0], (640, 640))
    small_plan = [(16, 0.5, 1.0)]
    fast = geometric_crops(big, small_plan, random.Random(2))[0].astype(float)
    img = Image.open(io.BytesIO(big)).convert("RGB")
    from facesift.pretrain.multicrop import random_resized_box
    box = random_resized_box(640, 640, (0.5, 1.0), random.Random(2))
    slow = np.asarray(img.resize((16, 16), Image.BILINEAR, box=box)).astype(float)
    assert np.abs(fast - slow).mean() < 6


def test_photometric_identity_and_jitter(face_files):
    cfg = CropConfig(nmb_crops=[2], size_crops=[32], min_scale_crops=[0.5], max_scale_crops=[1.0])
    samples = [geometric_crops(_jpeg(f), crop_plan(cfg), random.Random(i)) for i, f in enumerate(face_files[:6])]
    crops = collate_crops(samples)
    assert crops[0].shape == (6, 3, 32, 32) and crops[0].dtype == torch.uint8
    off = CropConfig(jitter_p=0, grayscale_p=0, blur_p=0, flip_p=0)
    x = photometric(crops[0], off, torch.Generator().manual_seed(0))
    mean, std = torch.tensor(off.mean).view(1, 3, 1, 1), torch.tensor(off.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x * std + mean, crops[0].float() / 255, atol=1e-5, rtol=0)
    gray = CropConfig(jitter_p=0, grayscale_p=1, blur_p=0, flip_p=1)
    g = photometric(crops[0], gray, torch.Generator().manual_seed(0)) * std + mean
    assert torch.allclose(g[:, 0], g[:, 1], atol=1e-5)
    torch.testing.assert_close(g[:, 0], (crops[0].float().flip(-1) / 255 * torch.tensor(
        [0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1), atol=1e-5, rtol=0)
    out = augment_batch(crops, CropConfig(), torch.Generator().manual_seed(0))
    again = augment_batch(crops, CropConfig(), torch.Generator().manual_seed(0))
    assert len(out) == 2 and out[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out[0], again[0])
    assert torch.isfinite(out[0]).all() and not torch.allclose(out[0], x)
    blurred = photometric(crops[0], CropConfig(jitter_p=0, grayscale_p=0, blur_p=1, flip_p=0,
                                               blur_sigma=[2.0, 2.0]), torch.Generator().manual_seed(0))
    assert blurred.diff(dim=-1).abs().mean() < x.diff(dim=-1).abs().mean() * 0.8


def test_device_crops_match_the_worker_crops(face_files):
    """roi_align on the batch (device path) cuts the same crops as PIL in the workers."""
    cfg = CropConfig(nmb_crops=[2, 3], size_crops=[64, 24])
    plan = crop_plan(cfg)
    sizes = [(256, 256), (200, 180), (256, 256), (640, 480)]  # uneven sizes: padded batch; 640: draft decode
    jpegs = [_jpeg(f, size) for f, size in zip(face_files, sizes)]
    worker = collate_crops([geometric_crops(d, plan, random.Random(i)) for i, d in enumerate(jpegs)])
    images, boxes = collate_images([image_and_boxes(d, plan, random.Random(i)) for i, d in enumerate(jpegs)])
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 256, 256) and boxes.shape == (4, 5, 4)
    device = cut_crops(images, boxes, plan)
    assert [c.shape for c in device] == [w.shape for w in worker]
    for w, d in zip(worker, device):
        diff = (w.float() / 255 - d).abs()
        assert diff.mean() < 2 / 255 and diff.max() < 0.25
    # the device path feeds the same photometric stage
    out = augment_batch(device, cfg, torch.Generator().manual_seed(0))
    assert out[0].shape == (4, 3, 64, 64) and torch.isfinite(out[0]).all()


def test_composed_colour_map_equals_torchvision_ops_in_sequence():
    """brightness/contrast/saturation composed into one matrix = torchvision's functional ops one
    after another (mid-range colours: no intermediate clamping), in any order; grayscale last."""
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(0)
    x = 0.35 + 0.3 * torch.rand(4, 3, 8, 8, generator=g)
    bri, con, sat = (0.85 + 0.3 * torch.rand(4, generator=g) for _ in range(3))
    ops = {0: lambda im, i: TF.adjust_brightness(im, bri[i].item()),
           1: lambda im, i: TF.adjust_contrast(im, con[i].item()),
           2: lambda im, i: TF.adjust_saturation(im, sat[i].item())}
    for order, gray in (([0, 1, 2, 3], False), ([2, 3, 1, 0], True), ([1, 0, 3, 2], False)):
        grayscale = torch.tensor([gray, False, gray, True])
        mat, off = colour_matrix(x.mean(dim=(2, 3)), bri, con, sat, torch.zeros(4), order, grayscale)
        ours = torch.einsum("bij,bjhw->bihw", mat, x) + off.view(4, 3, 1, 1)
        for i in range(4):
            ref = x[i]
            for op in order:
                if op in ops:
                    ref = ops[op](ref, i)
            if grayscale[i]:
                ref = TF.rgb_to_grayscale(ref, num_output_channels=3)
            torch.testing.assert_close(ours[i], ref, atol=2e-3, rtol=0)  # torchvision's grey: 0.2989


def test_hue_rotation_keeps_luma_and_turns_chroma():
    g = torch.Generator().manual_seed(1)
    means = torch.rand(3, 3, generator=g)
    one = torch.ones(3)
    mat, off = colour_matrix(means, one, one, one, torch.tensor([0.0, 0.1, 0.5]), [3, 0, 1, 2],
                             torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(mat[0], torch.eye(3), atol=1e-5, rtol=0)
    luma = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(luma @ mat[1], luma, atol=1e-5, rtol=0)
    assert (mat[1] - torch.eye(3)).abs().max() > 0.1 and torch.allclose(off, torch.zeros(3, 3))


def _lars_reference(params, grads_per_step, lr, mom, wd, tc, eps=1e-8):
    """LARC's update written out per tensor, to check the multi-tensor step against."""
    params = [p.clone() for p in params]
    bufs = [None] * len(params)
    for grads in grads_per_step:
        for i, (w, g) in enumerate(zip(params, grads)):
            wn, gn = w.norm(), g.norm()
            scale = tc * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else torch.tensor(1.0)
            d = (g + wd * w) * scale
            bufs[i] = d.clone() if bufs[i] is None else bufs[i] * mom + d
            params[i] = w - lr * bufs[i]
    return params


def test_lars_multi_tensor_step_matches_the_per_tensor_update():
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (8,), (5, 8), (5,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    params[1].data.zero_()                       # ||w|| = 0: no adaptation, the plain SGD step
    start = [p.detach().clone() for p in params]
    steps = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(3)]
    steps[1][2].zero_()                          # ||g|| = 0 on one step
    opt = LARS(params, lr=0.5, momentum=0.9, weight_decay=1e-4, trust_coefficient=0.02)
    for grads in steps:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))   # gradients left as they were
    want = _lars_reference(start, steps, lr=0.5, mom=0.9, wd=1e-4, tc=0.02)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.detach(), w)
    # a parameter without a gradient is left alone and gets no state
    frozen = torch.nn.Parameter(torch.ones(3))
    opt2 = LARS([frozen, params[0]], lr=0.1)
    params[0].grad = torch.ones_like(params[0])
    opt2.step()
    assert torch.equal(frozen.detach(), torch.ones(3)) and frozen not in opt2.state
