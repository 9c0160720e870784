"""Detectors: MTCNN on real photos (t1.jpg has 6 faces), batching, SCRFD errors and real model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesift.curate.config import DetectConfig
from facesift.curate.detect import Detections, MTCNNDetector, SCRFDDetector, build_detector, parallelism


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_t1_has_six_faces_with_float_outputs(t1_faces):
    _, det = t1_faces
    assert isinstance(det, Detections) and len(det) == 6
    assert det.boxes.shape == (6, 4) and det.scores.shape == (6,) and det.landmarks.shape == (6, 5, 2)
    assert det.boxes.dtype == det.scores.dtype == det.landmarks.dtype == np.float32
    assert (det.scores >= 0.95).all()
    # landmarks inside their boxes, left eye left of right eye, eyes above the mouth
    lm, b = det.landmarks, det.boxes
    assert ((lm[..., 0] >= b[:, None, 0] - 2) & (lm[..., 0] <= b[:, None, 2] + 2)).all()
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, :2, 1].max(1) < lm[:, 3:, 1].min(1)).all()


def test_batched_equals_single_and_downscaling_maps_back(mtcnn, shared_data):
    paths = sorted((shared_data / "yalefaces").glob("subject02.*"))[:2]
    images = [_rgb(p) for p in paths]
    batched = mtcnn.detect(images)
    single = [mtcnn.detect([im])[0] for im in images]
    for a, b in zip(batched, single):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1.0)
    # zero-padding to a square (how mixed sizes share a GPU batch) finds the same faces
    padded = MTCNNDetector(DetectConfig(device="cpu", pad="square")).detect([images[0], images[1][:, :300]])
    assert [len(d) for d in padded] == [1, 1]
    np.testing.assert_allclose(padded[0].landmarks, single[0].landmarks, atol=2.0)
    # the same image detected through the max_side downscale lands on the same source pixels
    small = MTCNNDetector(DetectConfig(device="cpu", max_side=200))
    (c,) = small.detect([images[0]])
    assert len(c) == 1
    np.testing.assert_allclose(c.landmarks, single[0].landmarks, atol=8.0)  # coarser input


def test_build_detector_choices():
    assert build_detector(DetectConfig(backend="none")) is None
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector(DetectConfig(backend="dlib"))


def test_scrfd_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="scrfd_model"):
        SCRFDDetector(DetectConfig(backend="scrfd", scrfd_model=str(tmp_path / "det_10g.onnx")))
    with pytest.raises(FileNotFoundError, match="model file not found"):
        SCRFDDetector(DetectConfig(backend="scrfd"))


def _scrfd_model() -> Path | None:
    candidates = [os.environ.get("FACESIFT_SCRFD_MODEL", "")]
    candidates += [str(p) for p in (Path.home() / ".insightface" / "models").glob("*/det_*.onnx")]
    candidates += [str(p) for p in (Path.home() / ".insightface" / "models").glob("*/scrfd*.onnx")]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_scrfd_detects_t1_faces(shared_data):
    model = _scrfd_model()
    if model is None:
        pytest.skip("no SCRFD model file (set FACESIFT_SCRFD_MODEL=/path/det_10g.onnx)")
    det = SCRFDDetector(DetectConfig(backend="scrfd", scrfd_model=str(model), min_score=0.5))
    (d,) = det.detect([_rgb(shared_data / "photos" / "t1.jpg")])
    assert len(d) == 6 and d.landmarks.shape == (6, 5, 2) and d.scores.dtype == np.float32


@pytest.mark.gpu
def test_mtcnn_on_cuda_matches_cpu(t1_faces):
    image, cpu = t1_faces
    gpu = MTCNNDetector(DetectConfig(device="cuda", min_score=0.95, pad="square"))
    (d,) = gpu.detect([np.asarray(image)])
    assert len(d) == 6 and d.landmarks.dtype == np.float32
    order_c, order_g = np.argsort(cpu.boxes[:, 0]), np.argsort(d.boxes[:, 0])
    np.testing.assert_allclose(d.landmarks[order_g], cpu.landmarks[order_c], atol=3.0)
    # a mixed-size batch goes through padded and batched
    small = np.asarray(image.resize((640, 443)))
    both = gpu.detect([np.asarray(image), small])
    assert len(both[0]) == 6 and len(both[1]) >= 4  # half-size faces are near min_face_px


def test_parallelism_defaults_and_overrides():
    """CPU: several single-threaded workers (robust to the pipeline's own CPU work); CUDA: one."""
    assert parallelism(DetectConfig(), "cpu", cores=2) == (2, 1)
    assert parallelism(DetectConfig(), "cpu", cores=16) == (8, 2)
    assert parallelism(DetectConfig(), "cpu", cores=1) == (1, 1)
    assert parallelism(DetectConfig(workers=1), "cpu", cores=4) == (1, 4)
    assert parallelism(DetectConfig(workers=3, threads=2), "cpu", cores=4) == (3, 2)
    assert parallelism(DetectConfig(), "cuda", cores=32) == (1, 1)


def test_concurrent_detect_calls_match_serial(shared_data):
    """The pipeline runs `detect` from several threads on one model: results equal serial ones."""
    import concurrent.futures as cf

    det = build_detector(DetectConfig(device="cpu", workers=2, min_face_px=60))
    images = [_rgb(p) for p in sorted((shared_data / "yalefaces").glob("*.gif"))[:12]]
    batches = [images[i:i + 3] for i in range(0, 12, 3)]
    serial = [det.detect(b) for b in batches]
    with cf.ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(det.detect, batches))
    for a, b in zip(serial, parallel):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
            np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)


def test_detector_in_its_own_process_matches_in_process(shared_data, monkeypatch):
    """`detect.isolate`: the same detections through shared memory and a child process, batches
    side by side, errors raised in the caller, a dead child failing calls instead of hanging."""
    import concurrent.futures as cf

    from facesift.curate.detect import isolated
    from facesift.curate.detect_process import DetectorProcess

    cfg = DetectConfig(device="cpu", workers=1, threads=1, min_face_px=60)
    assert not isolated(cfg) and isolated(DetectConfig(device="cpu", isolate="on"))
    assert not isolated(DetectConfig(backend="none", isolate="on"))
    with pytest.raises(ValueError, match="isolate"):
        isolated(DetectConfig(isolate="yes"))
    images = [_rgb(p) for p in sorted((shared_data / "yalefaces").glob("*.gif"))[:8]]
    images.append(_rgb(shared_data / "photos" / "t1.jpg"))
    batches = [images[:3], images[3:8], images[8:]]
    here = build_detector(cfg)
    child = build_detector(cfg, isolate=True)
    try:
        assert isinstance(child, DetectorProcess) and child.name == "mtcnn" and child.workers == 2
        with cf.ThreadPoolExecutor(child.workers) as pool:
            there = list(pool.map(child.detect, batches))
        for a, b in zip((here.detect(batch) for batch in batches), there):
            for x, y in zip(a, b):
                assert len(x) == len(y)
                np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
                np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)
        assert [len(d) for d in there[2]] == [6]
        with pytest.raises(RuntimeError, match="detector: .*"):  # a bad batch is the caller's error
            child.detect([np.zeros((4, 4), np.uint8)])
        assert len(child.detect(images[:1])[0]) == 1  # and the child carries on
        child._proc.kill()
        child._proc.join(5)
        with pytest.raises(RuntimeError, match="detector process ended"):
            child.detect(images[:1])
    finally:
        child.close()
