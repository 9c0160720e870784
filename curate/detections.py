"""What a face detector returns, and the interface every detector (in this process or its own) offers.

Its own module so that the backends (detect.py), the detector process (detect_process.py) and
the filters all share it without importing one another.

Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner
(image left/right as seen by the viewer), in source-image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Detections:
    boxes: np.ndarray       # (N, 4) float32: x0, y0, x1, y1
    scores: np.ndarray      # (N,) float32
    landmarks: np.ndarray   # (N, 5, 2) float32

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                          np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.landmarks[keep])


class Detector(Protocol):
    name: str
    workers: int  # batches the pipeline may run through `detect` at once, from as many threads

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """One `Detections` per input image (H×W×3 uint8 RGB), in source pixels."""
