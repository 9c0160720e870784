"""Alignment: the similarity estimate is exact on exact data, and crops put the eyes on the template."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facesift.common.geometry import apply_transform, similarity_transform
from facesift.curate.align import align_face, resize_center_crop, template
from facesift.curate.config import AlignConfig
from facesift.common.geometry import estimate_yaw


def read_pts(path) -> np.ndarray:
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, float).reshape(-1, 2) - 1.0  # iBUG points are 1-based


def five_points(pts68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners from the 68-point iBUG layout."""
    return np.stack([pts68[36:42].mean(0), pts68[42:48].mean(0), pts68[30], pts68[48], pts68[54]])


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -40.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-7)


def test_template_is_loose_and_centred():
    t = template(256, eye_distance=0.25, eye_y=0.46)
    assert t[1, 0] - t[0, 0] == pytest.approx(64.0)
    assert t[:2, 0].mean() == pytest.approx(128.0) and t[:2, 1].mean() == pytest.approx(0.46 * 256)
    assert t[3:, 1].mean() < 0.85 * 256  # the chin and some context stay in the crop


def test_crops_put_detected_eyes_on_the_template(mtcnn, t1_faces):
    det = mtcnn
    cfg = AlignConfig(crop_size=256)
    tpl = template(256, cfg.eye_distance, cfg.eye_y)
    image, faces = t1_faces
    crops, frontal, mapped = [], [], []
    for lm in faces.landmarks:
        crop, m = align_face(image, lm, cfg)
        assert crop.size == (256, 256)
        frontal.append(abs(estimate_yaw(lm)[0]) < 30)
        mapped.append(apply_transform(m, lm[:2]))
        # least-squares residual at the eyes: a few pixels unless the head is turned
        assert np.abs(mapped[-1] - tpl[:2]).max() < (8 if frontal[-1] else 16)
        crops.append(np.asarray(crop))
    assert sum(frontal) >= 4
    # independent check on the pixels: the detector finds the eyes where the warp put them
    # (64 px between the template's eyes; MTCNN's own landmark jitter is a few pixels)
    to_template, to_mapped = [], []
    for found, where in zip(det.detect(crops), mapped):
        assert len(found) >= 1
        eyes = found.landmarks[np.argmax(found.scores), :2]
        to_template.append(np.linalg.norm(eyes - tpl[:2], axis=1).max())
        to_mapped.append(np.linalg.norm(eyes - where, axis=1).max())
    assert max(to_mapped) < 9.0, to_mapped
    assert np.median(to_template) < 8.0 and max(to_template) < 18.0, to_template


def test_ground_truth_landmarks_and_antialiased_downscale(shared_data):
    image = Image.open(shared_data / "photos" / "einstein.jpg").convert("RGB")
    lm = five_points(read_pts(shared_data / "photos" / "einstein.pts"))
    cfg = AlignConfig(crop_size=128)
    crop, m = align_face(image, lm, cfg)
    tpl = template(128, cfg.eye_distance, cfg.eye_y)
    assert np.abs(apply_transform(m, lm) - tpl).max() < 8
    # a 4× larger source takes the box-reduce path and must give the same crop
    big = image.resize((image.width * 4, image.height * 4), Image.BICUBIC)
    crop_big, m_big = align_face(big, lm * 4 + 1.5, cfg)
    diff = np.abs(np.asarray(crop_big, float) - np.asarray(crop, float)).mean()
    assert diff < 6.0, diff


def test_resize_center_crop():
    im = Image.new("RGB", (400, 200), (0, 0, 0))
    im.paste((255, 0, 0), (150, 0, 250, 200))
    out = resize_center_crop(im, 64)
    assert out.size == (64, 64)
    assert np.asarray(out)[32, 32].tolist()[0] > 200 and np.asarray(out)[32, 2].tolist()[0] < 50


def test_warp_matches_a_reference_bicubic_and_reads_arrays(shared_data):
    """OpenCV's warp with the pixel-centre conversion lands where PIL's bicubic affine does (same
    coordinate convention), and the array and PIL inputs give the same crop."""
    from facesift.curate.align import _invert, warp

    image = Image.open(shared_data / "photos" / "t1.jpg").convert("RGB")
    lm = np.array([[400, 300], [470, 302], [435, 340], [405, 380], [465, 380]], float)
    for scale in (1.0, 0.35):  # 0.35: the face is upsampled; 1.0: mild downsampling
        m = similarity_transform(lm * scale, template(256))
        ours = np.asarray(warp(np.asarray(image), m, 256)).astype(float)
        assert np.array_equal(ours, np.asarray(warp(image, m, 256)))
        ref = np.asarray(image.transform((256, 256), Image.AFFINE, tuple(_invert(m).reshape(-1)),
                                         resample=Image.BICUBIC)).astype(float)
        assert np.abs(ours - ref).mean() < 1.5, scale
    far = similarity_transform(lm + 10_000, template(256))  # a crop wholly outside the photo: black
    assert not np.asarray(warp(image, far, 64)).any()


@pytest.mark.parametrize("scale", [3.0, 1.0, 0.45, 0.2])  # 0.45 and 0.2: the box-reduce path
def test_warp_puts_source_points_on_the_template_to_a_fraction_of_a_pixel(scale):
    """Pixel-exact check of the warp (and its pixel-centre convention): Gaussian blobs drawn
    at known continuous coordinates land, as blob centroids in the crop, where the transform
    maps those coordinates."""
    rng = np.random.default_rng(int(scale * 10))
    cfg = AlignConfig(crop_size=128)
    tpl = template(128, cfg.eye_distance, cfg.eye_y)
    angle = 0.35
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lm = (tpl - 64) @ rot.T / scale + rng.uniform(300, 400, 2)  # the template, turned and scaled
    h = w = 800
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres in continuous coordinates
    sigma = 2.0 / scale  # about 2 crop pixels wide after the warp
    canvas = np.zeros((h, w), np.float64)
    for x, y in lm:
        canvas += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    image = np.repeat((255 * np.clip(canvas, 0, 1)).astype(np.uint8)[..., None], 3, axis=2)
    crop, m = align_face(image, lm, cfg)
    np.testing.assert_allclose(apply_transform(m, lm), tpl, atol=1e-6)
    grey = np.asarray(crop, np.float64)[..., 0]
    cy, cx = np.mgrid[0:128, 0:128] + 0.5
    for x, y in tpl:
        near = (np.hypot(cx - x, cy - y) < 6) * grey
        found = np.array([(near * cx).sum(), (near * cy).sum()]) / near.sum()
        assert np.hypot(*(found - (x, y))) < 0.35, (scale, found, (x, y))
