"""Face detectors behind one small interface: a batch of RGB images in, boxes + 5 landmarks out.

Backends:
- `mtcnn`  facenet-pytorch's MTCNN (weights ship in its wheel; CPU or CUDA). Equal-size images
           go through the network as one batch tensor, so the pipeline groups by size.
- `scrfd`  insightface SCRFD / RetinaFace ONNX models via onnxruntime (CUDA provider when
           present), loaded from a local file: weights cannot be downloaded here.

`Detections` and the `Detector` interface live in detections.py (landmark order there). A
detector in a process of its own is detect_process.py: it is handed `build_backend` to call in
its child, so it needs nothing from this module (no import loop).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from facesift.common.runtime import resolve_device
from facesift.curate.config import DetectConfig
from facesift.curate.detect_process import DetectorProcess
from facesift.curate.detections import Detections, Detector

__all__ = ["Detections", "Detector", "MTCNNDetector", "SCRFDDetector", "build_backend", "build_detector",
           "close_detector", "isolated", "parallelism"]

log = logging.getLogger(__name__)


def parallelism(cfg: DetectConfig, device: str, cores: int | None = None) -> tuple[int, int]:
    """(detector workers running batches side by side, torch threads in each).

    On CPU the default is several single-threaded workers rather than one worker with every
    core: MTCNN is many small ops, and torch's intra-op threads meet at a barrier after each,
    so one thread pre-empted by anything else (the pipeline's own downloads, decoding and JPEG
    encoding) stalls them all. Measured on 2 cores, 300 photos: one worker × 2 threads 4.36 s,
    2 workers × 1 thread 3.85 s; beside a process using 30 % of a core, 6.78 s vs 4.71 s."""
    cores = cores or os.cpu_count() or 1
    if device != "cpu":
        return max(1, cfg.workers or 1), max(1, cfg.threads or 1)
    workers = cfg.workers or min(cores, 8)
    return workers, cfg.threads or max(1, cores // workers)


def _shrink(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale for detection (faces smaller than the inter-ocular filter are wasted work)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=2.0)), scale


class MTCNNDetector:
    name = "mtcnn"

    def __init__(self, cfg: DetectConfig):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise RuntimeError("the mtcnn detector needs facenet-pytorch: "
                               "pip install --no-deps facenet-pytorch==2.6.0") from exc
        import torch

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.workers, threads = parallelism(cfg, self.device)
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.model = MTCNN(keep_all=True, device=self.device, min_face_size=cfg.min_face_px,
                           select_largest=False, post_process=False)
        # the first call pays one-off set-up (thread pool, oneDNN, allocator): pay it now, before
        # any photo is waiting on the detector
        self._run([np.zeros((96, 96, 3), np.uint8)])

    def _run(self, batch: list[np.ndarray]) -> list[Detections]:
        import torch
        data = np.stack(batch) if len(batch) > 1 else batch[0]
        with torch.inference_mode():
            boxes, probs, points = self.model.detect(data, landmarks=True)
        if len(batch) == 1:
            boxes, probs, points = [boxes], [probs], [points]
        out = []
        for b, p, lm in zip(boxes, probs, points):
            if b is None or len(b) == 0:
                out.append(Detections.empty())
                continue
            d = Detections(np.asarray(b, np.float32).reshape(-1, 4), np.asarray(p, np.float32).reshape(-1),
                           np.asarray(lm, np.float32).reshape(-1, 5, 2))
            out.append(d.select(d.scores >= self.cfg.min_score))
        return out

    def _pad(self, image: np.ndarray) -> np.ndarray:
        """Zero-pad right/bottom to a square side rounded up to 64, so landscape and portrait
        photos of one size class share a batch (worth it on GPU; boxes are unaffected)."""
        h, w = image.shape[:2]
        side = -(-max(h, w) // 64) * 64
        out = np.zeros((side, side, 3), np.uint8)
        out[:h, :w] = image
        return out

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        shrunk = [_shrink(im, self.cfg.max_side) for im in images]
        pad = self.cfg.pad == "square" or (self.cfg.pad == "auto" and self.device.startswith("cuda"))
        if pad and len(images) > 1:
            shrunk = [(self._pad(im), scale) for im, scale in shrunk]
        results: list[Detections | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, (im, _) in enumerate(shrunk):
            groups.setdefault(im.shape, []).append(i)
        bs = max(1, self.cfg.batch_size)
        for idx in groups.values():
            for s in range(0, len(idx), bs):
                chunk = idx[s:s + bs]
                for i, det in zip(chunk, self._run([shrunk[i][0] for i in chunk])):
                    scale = shrunk[i][1]
                    if scale != 1.0:
                        det = Detections(det.boxes / scale, det.scores, det.landmarks / scale)
                    results[i] = det
        return results  # type: ignore[return-value]


class SCRFDDetector:
    name = "scrfd"

    def __init__(self, cfg: DetectConfig):
        path = Path(cfg.scrfd_model).expanduser() if cfg.scrfd_model else None
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"scrfd detector: model file not found ({cfg.scrfd_model or 'detect.scrfd_model is empty'}). "
                "Download an insightface SCRFD/RetinaFace ONNX model (e.g. det_10g.onnx from the "
                "buffalo_l pack) and pass --set detect.scrfd_model=/path/to/det_10g.onnx")
        try:
            import onnxruntime
            from insightface.model_zoo import model_zoo
        except ImportError as exc:
            raise RuntimeError("the scrfd detector needs insightface and onnxruntime: "
                               "pip install 'facesift[scrfd]' (or onnxruntime-gpu)") from exc
        device = cfg.device
        available = onnxruntime.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        elif device.startswith("cuda"):
            raise RuntimeError("detect.device=cuda but onnxruntime has no CUDAExecutionProvider "
                               "(install onnxruntime-gpu)")
        self.model = model_zoo.get_model(str(path), providers=providers)
        if self.model is None:
            raise RuntimeError(f"scrfd detector: {path} is not a detection model insightface recognises")
        ctx = 0 if providers[0] == "CUDAExecutionProvider" else -1
        self.model.prepare(ctx_id=ctx, input_size=(cfg.scrfd_input, cfg.scrfd_input), det_thresh=cfg.min_score)
        self.cfg = cfg
        self.workers = max(1, cfg.workers or 1)  # onnxruntime parallelises inside one call
        log.info("scrfd: %s on %s", path.name, providers[0])

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        out = []
        for im in images:
            bgr = np.ascontiguousarray(im[:, :, ::-1])
            dets, kps = self.model.detect(bgr, input_size=(self.cfg.scrfd_input, self.cfg.scrfd_input), max_num=0)
            if dets is None or len(dets) == 0 or kps is None:
                out.append(Detections.empty())
                continue
            d = Detections(np.asarray(dets[:, :4], np.float32), np.asarray(dets[:, 4], np.float32),
                           np.asarray(kps, np.float32).reshape(-1, 5, 2))
            out.append(d.select(d.scores >= self.cfg.min_score))
        return out


def isolated(cfg: DetectConfig) -> bool:
    """Whether the detector runs in a process of its own (`detect_process`): by default on CUDA,
    where the detector is bound by its Python and the pipeline's threads compete for the GIL;
    on CPU the in-process workers are tuned to share the cores (see `parallelism`)."""
    if cfg.isolate not in ("auto", "on", "off"):
        raise ValueError(f"detect.isolate must be auto, on or off, not {cfg.isolate!r}")
    if cfg.isolate == "auto":
        return cfg.backend != "none" and resolve_device(cfg.device).startswith("cuda")
    return cfg.isolate == "on" and cfg.backend != "none"


def build_detector(cfg: DetectConfig, isolate: bool | None = None) -> Detector | None:
    """The configured backend; None for `none` (whole images, no faces). With `isolate` (default:
    `isolated(cfg)`) it runs in a child process; close it with `close_detector`."""
    if isolate is None:
        isolate = isolated(cfg)
    if isolate and cfg.backend != "none":
        return DetectorProcess(cfg, build_backend)
    return build_backend(cfg)


def build_backend(cfg: DetectConfig) -> Detector | None:
    """The configured backend in this process; None for `none`."""
    if cfg.backend == "mtcnn":
        return MTCNNDetector(cfg)
    if cfg.backend == "scrfd":
        return SCRFDDetector(cfg)
    if cfg.backend == "none":
        return None
    raise ValueError(f"unknown detector {cfg.backend!r}: choose mtcnn, scrfd or none")


def close_detector(detector: Detector | None) -> None:
    """Release what a detector holds outside this process (a child process, shared memory)."""
    close = getattr(detector, "close", None)
    if close is not None:
        close()
