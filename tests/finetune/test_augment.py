"""The warp moves landmarks with the pixels; flips swap left and right; heatmaps decode sub-pixel."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from facesift.finetune.augment import AugmentConfig, affine_matrix, random_params, warp
from facesift.finetune.decode import decode_heatmaps, gaussian_heatmaps


def _dots(points, size=80):
    arr = np.zeros((size, size, 3), np.uint8)
    for x, y in points:
        arr[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    return Image.fromarray(arr)


@pytest.mark.parametrize("seed", range(5))
def test_warp_moves_points_with_pixels(seed):
    pts = np.array([[30, 32], [50, 31], [40, 42], [33, 52], [48, 53]], np.float32)
    image = _dots(pts)
    params = random_params(AugmentConfig(flip=0.0), random.Random(seed))
    params.pop("flip")
    out, moved = warp(image, pts, affine_matrix((40, 40, 80), 64, **params), 64)
    arr = np.asarray(out, np.float32)[..., 0]
    for x, y in moved:   # a bright pixel survives near every moved point
        xi, yi = int(round(x)), int(round(y))
        assert arr[max(0, yi - 1):yi + 2, max(0, xi - 1):xi + 2].max() > 100, (x, y)
        # ... and its brightness is centred on the point, not merely nearby
        ys, xs = np.mgrid[max(0, yi - 3):yi + 4, max(0, xi - 3):xi + 4]
        w = arr[ys, xs]
        assert abs((w * xs).sum() / w.sum() - x) < 0.6 and abs((w * ys).sum() / w.sum() - y) < 0.6


def test_flip_swaps_left_and_right():
    pts = np.array([[30, 32], [50, 31], [40, 42], [33, 52], [48, 53]], np.float32)
    _, out = warp(_dots(pts), pts, affine_matrix((40, 40, 80), 80), 80, flip=True)
    # the new left eye is the mirrored old right eye, and it is still on the left
    np.testing.assert_allclose(out[0], [79 - 50, 31], atol=1e-4)
    np.testing.assert_allclose(out[1], [79 - 30, 32], atol=1e-4)
    np.testing.assert_allclose(out[2], [79 - 40, 42], atol=1e-4)
    np.testing.assert_allclose(out[3], [79 - 48, 53], atol=1e-4)
    assert out[0, 0] < out[1, 0] and out[3, 0] < out[4, 0]


def test_identity_warp_keeps_coordinates():
    pts = np.array([[10.25, 20.5], [70.0, 5.0]], np.float32)
    _, out = warp(_dots(pts), pts, affine_matrix((40, 40, 80), 80), 80)
    np.testing.assert_allclose(out, pts, atol=1e-4)


def test_heatmap_decoding_is_subpixel():
    pts = torch.tensor([[[13.3, 17.8], [40.6, 9.1], [6.2, 50.4]]])
    hm = gaussian_heatmaps(pts, (16, 16), stride=4, sigma=1.5)
    got = decode_heatmaps(hm, stride=4)
    assert (got - pts).abs().max() < 0.01          # exact on a Gaussian
    # arg-max alone would be up to 2 input pixels off at stride 4
    flat = hm.flatten(2).argmax(-1)
    coarse = torch.stack([(flat % 16).float(), (flat // 16).float()], -1) * 4 + 1.5
    assert (coarse - pts).abs().max() > 0.5


def test_68_point_flip_pairs_are_a_mirror_permutation():
    from facesift.finetune.augment import flip_points
    from facesift.finetune.datasets import FLIP_PAIRS
    flat = [i for pair in FLIP_PAIRS[68] for i in pair]
    assert len(flat) == len(set(flat)) and max(flat) < 68
    pts = np.random.default_rng(0).random((68, 2))
    np.testing.assert_array_equal(flip_points(flip_points(pts)), pts)
    # the jaw's first point swaps with its last, the outer eye corners with each other
    assert {0: 16, 36: 45, 48: 54}.items() <= dict(FLIP_PAIRS[68]).items()


def test_pts_face_is_cropped_around_its_landmarks(shared_data):
    from facesift.finetune.augment import AugmentConfig, LandmarkTransform
    from facesift.finetune.datasets import load_image, read_pts_dir
    rec = next(r for r in read_pts_dir(shared_data / "photos") if r["key"] == "einstein")
    image = load_image(rec["path"])
    x, pts = LandmarkTransform(64, AugmentConfig(), train=False)(image, rec)
    assert x.shape == (3, 64, 64)
    side = (pts.max(0).values - pts.min(0).values).max()
    assert 0 <= pts.min() and pts.max() < 64 and 64 / 1.3 - 1 < side < 64 / 1.3 + 1
    for seed in range(5):   # random warps keep the face mostly in frame
        random.seed(seed)
        _, p = LandmarkTransform(64, AugmentConfig(), train=True)(image, rec)
        assert ((p >= 0) & (p < 64)).float().mean() > 0.9


def test_photometric_augmentation_is_seeded_moves_no_point_and_is_off_by_default():
    """Colour, grayscale and blur change pixels only: the points are the geometric warp's, the
    same seed gives the same image, and the default config leaves the warped image untouched."""
    from facesift.finetune.augment import LandmarkTransform
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
    rec = {"target": np.array([[30, 30], [50, 30], [40, 40], [32, 50], [48, 50]], np.float32)}
    geo = dict(scale=(1.0, 1.0), rotate=0.0, translate=0.0, flip=0.0)
    plain = LandmarkTransform(48, AugmentConfig(**geo), train=True)
    photo = LandmarkTransform(48, AugmentConfig(**geo, color=0.4, grayscale=0.5, blur=0.5), train=True)
    random.seed(3)
    x0, p0 = plain(image, rec)
    outs = []
    for _ in range(2):
        random.seed(3)
        outs.append(photo(image, rec))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], p0)
    assert not torch.allclose(outs[0][0], x0)
    random.seed(3)
    torch.testing.assert_close(LandmarkTransform(48, AugmentConfig(**geo), train=False)(image, rec)[0], x0)
