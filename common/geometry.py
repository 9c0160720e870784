"""Point-set geometry shared by curate (aligning faces to a template) and finetune (re-cropping
around a predicted face): the least-squares similarity between two landmark sets, and the
measures of a 5-point face (eye distance, a rough yaw) that curate stores and finetune reports by.

One implementation, because both stages feed it landmarks that can be degenerate (a detector's
collapsed points, a weak model's NaN or all-in-one-place prediction); the guards live here.
"""
from __future__ import annotations

import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray, min_scale: float = 0.0) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) with dst ~ M @ [x, y, 1]
    (Umeyama 1991; reflections excluded).

    Degenerate input never raises: points with a non-finite coordinate (in either set) are
    left out, fewer than two usable pairs give the identity, and a scale below `min_scale`
    (a collapsed `dst`) or a non-finite one falls back to scale 1 without rotation, keeping
    only the shift of the centroids.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ok = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    m = np.zeros((2, 3))
    if ok.sum() < 2:
        m[:, :2] = np.eye(2)
        return m
    src, dst = src[ok], dst[ok]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(dc.T @ sc / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (sc ** 2).sum() / len(src)
    scale = (d * np.diag(sign)).sum() / var_s if var_s > 0 else 1.0
    if not np.isfinite(scale) or abs(scale) < min_scale:
        scale, rot = 1.0, np.eye(2)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply_transform(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`points` (N, 2) through the 2x3 matrix `m`."""
    pts = np.asarray(points, np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def interocular(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    return np.linalg.norm(lm[:, 1] - lm[:, 0], axis=1)


def estimate_yaw(landmarks: np.ndarray) -> np.ndarray:
    """Degrees per face: the nose tip's offset from the eye/mouth midline along the eye axis,
    relative to half the eye distance, through atan (0 frontal, +-90 profile; positive = nose
    towards the image's right). Curate stores it per face; finetune splits test faces by it."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
    axis = lm[:, 1] - lm[:, 0]
    half = np.linalg.norm(axis, axis=1) / 2
    unit = axis / np.maximum(half * 2, 1e-6)[:, None]
    mid = (lm[:, 0] + lm[:, 1] + lm[:, 3] + lm[:, 4]) / 4
    offset = ((lm[:, 2] - mid) * unit).sum(axis=1)
    return np.degrees(np.arctan2(offset, np.maximum(half, 1e-6)))
