import math

import numpy as np

from facesift.common.geometry import apply_transform, similarity_transform


def test_similarity_recovers_a_known_map():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 40, (5, 2))
    s, a, t = 1.7, math.radians(23), np.array([4.0, -7.5])
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    got = similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(got[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(got[:, 2], t, atol=1e-9)
    np.testing.assert_allclose(apply_transform(got, src), src @ rot.T + t, atol=1e-9)


def test_a_mirror_image_is_fitted_without_reflection():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]])
    m = similarity_transform(src, src * np.array([-1.0, 1.0]))
    assert np.linalg.det(m[:, :2]) > 0


def test_nan_points_are_left_out_and_too_few_give_the_identity():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 40, (5, 2))
    dst = src * 2.0 + 3.0
    dst[1] = np.nan
    np.testing.assert_allclose(similarity_transform(src, dst)[:, :2], 2.0 * np.eye(2), atol=1e-9)
    all_nan = np.full_like(src, np.nan)
    np.testing.assert_array_equal(similarity_transform(src, all_nan), [[1, 0, 0], [0, 1, 0]])


def test_a_collapsed_target_keeps_scale_one_and_the_centroid_shift():
    src = np.array([[10.0, 10.0], [30.0, 10.0], [20.0, 25.0]])
    dst = np.full((3, 2), 7.0)   # every point predicted in one place
    m = similarity_transform(src, dst, min_scale=1e-3)
    np.testing.assert_allclose(m[:, :2], np.eye(2))
    np.testing.assert_allclose(apply_transform(m, src).mean(0), [7.0, 7.0])
    assert abs(similarity_transform(src, dst)[:, :2]).max() < 1e-9   # without the floor: scale 0
