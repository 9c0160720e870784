"""Detector fixtures shared by the curate tests: MTCNN on CPU is the slow part, so load it and
detect t1.jpg's faces once per session."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def mtcnn():
    from facesift.curate.config import DetectConfig
    from facesift.curate.detect import MTCNNDetector
    return MTCNNDetector(DetectConfig(device="cpu", min_score=0.95))


@pytest.fixture(scope="session")
def t1_faces(mtcnn, shared_data):
    """(t1.jpg as PIL RGB, its Detections)."""
    image = Image.open(shared_data / "photos" / "t1.jpg").convert("RGB")
    (faces,) = mtcnn.detect([np.asarray(image)])
    return image, faces
