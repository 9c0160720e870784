"""`CurateConfig`: every option of `facesift curate`, one dataclass tree with working defaults.

Sections mirror the pipeline's replaceable steps (download → detect → filter → align → write)
so a YAML file or `--set detect.batch_size=64` reaches exactly one step.

Every number is range-checked (`bounded`) when the config is resolved, and again by
`check_config` when a run starts from a config built in code: a `--crop-size 0` stops the
command with exit 2 before anything is listed, downloaded or marked failed. Word-valued options
(detector, device, pad, isolate) are checked there too.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from facesift.common.config import bounded, check_range
from facesift.common.runtime import parse_part


@dataclass
class DownloadConfig:
    workers: int = bounded(16, 1, 1024)              # download + decode threads (in all, over `processes`)
    processes: int = bounded(0, 0, 1024)             # --detector none: processes sharing the threads (one GIL each);
                                                     # 0 = one per core from PROCESS_MIN_PHOTOS photos on;
                                                     # at most per_host and workers
    cpu_slots: int = bounded(0, 0, 1024)             # of those, how many decode/process at once; 0 = CPU count
    queue_size: int = bounded(0, 0, 1_000_000)       # images in flight ahead of the detector; 0 = 8 × workers
    per_host: int = bounded(8, 1, 1024)              # concurrent connections to one host
    timeout: float = bounded(20.0, 0.001, 3600.0)    # seconds per connect / read
    retries: int = bounded(3, 0, 100)                # extra attempts for timeouts, connection errors, 429/5xx
    backoff: float = bounded(0.5, 0.0, 3600.0)       # first backoff (s); doubles per attempt, jittered
    max_bytes: int = bounded(30_000_000, 1)          # byte cap per image
    max_pixels: int = bounded(89_478_485, 1)         # decompression-bomb cap (PIL's default), checked before decoding
    min_side: int = bounded(32, 1)                   # smaller images are skipped
    user_agent: str = "facesift/0.1 (+https://github.com/facesift)"
    dedupe: bool = True               # skip photos whose bytes equal an already curated photo
    draft: int = bounded(0, 0)                       # >0: decode JPEGs at a reduced scale, sides ≥ this (set for --detector none)


@dataclass
class DetectConfig:
    backend: str = "mtcnn"            # mtcnn | scrfd | none
    device: str = "auto"              # auto | cpu | cuda | cuda:N | mps
    batch_size: int = bounded(16, 1, 65536)          # images per detector call (grouped by size)
    min_score: float = bounded(0.8, 0.0, 1.0)        # candidate floor; faces below filter.min_score are counted rejections
    min_face_px: int = bounded(48, 12, 100_000)      # smallest face box searched (detector px; ≈1.5× min inter-ocular);
                                                     # 12 is MTCNN's window: smaller only blows up the image pyramid
    max_side: int = bounded(1280, 32, 100_000)       # images are downscaled to this long side for detection
    pad: str = "auto"                 # square: zero-pad to S×S so mixed sizes batch; auto = on CUDA only; none
    workers: int = bounded(0, 0, 1024)               # detector batches run side by side; 0 = auto (CPU: min(cores, 8); CUDA: 1)
    threads: int = bounded(0, 0, 1024)               # torch threads per CPU detector worker; 0 = cores // workers
    isolate: str = "auto"             # run the detector in its own process (own GIL): auto = on CUDA; on; off
    scrfd_model: str = ""             # path to an SCRFD/RetinaFace .onnx (insightface)
    scrfd_input: int = bounded(640, 32, 4096)        # SCRFD square input size


@dataclass
class FilterConfig:
    min_interocular: float = bounded(32.0, 0.0)      # source pixels between the eye centres
    min_score: float = bounded(0.95, 0.0, 1.0)       # detection probability kept (MTCNN: 0.95)
    max_faces: int = bounded(20, 0)                  # keep at most this many (largest) faces per photo; 0 = no cap
    min_sharpness: float = bounded(0.0, 0.0)         # variance of the Laplacian on the crop at 128 px grey; 0 = off
    max_yaw: float = bounded(0.0, 0.0, 90.0)         # degrees, estimated from 5 landmarks; 0 = off
    measures: bool = True             # sharpness, pHash, dHash in each sample's json; false is honoured
                                      # only by --detector none (faces are always measured)


@dataclass
class AlignConfig:
    crop_size: int = bounded(256, 1, 8192)           # output side (pixels)
    eye_distance: float = bounded(0.25, 0.01, 1.0)   # inter-ocular distance as a fraction of the crop (loose: context)
    eye_y: float = bounded(0.46, 0.0, 1.0)           # eye line height as a fraction of the crop
    jpeg_quality: int = bounded(95, 1, 100)
    workers: int = bounded(0, 0, 1024)               # align + encode threads; 0 = min(4, CPU count)


@dataclass
class ShardConfig:
    maxcount: int = bounded(10_000, 1)               # samples per shard
    maxsize: int = bounded(1_000_000_000, 1)         # bytes per shard
    mtime: float = bounded(1_577_836_800.0, 0.0)     # fixed tar member mtime (2020-01-01) → byte-identical shards


@dataclass
class CurateConfig:
    catalog: str = ""                 # catalog.sqlite from `facesift crawl`
    from_dir: str = ""                # or: an image folder (recursive)
    from_urls: str = ""               # or: .txt (one URL a line), .csv or .parquet with a `url` column
    out: str = "work/shards"
    part: str = ""                    # "K/N": process slice K (0-based) of N
    part_seed: int = bounded(0, 0)
    limit: int = bounded(0, 0)                       # process at most this many pending photos (0 = all)
    retry_failed: bool = False        # put photos that failed before (timeouts, 5xx ...) back in the queue
    download: DownloadConfig = field(default_factory=DownloadConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)


CHOICES = {"detect.backend": ("mtcnn", "scrfd", "none"), "detect.pad": ("auto", "square", "none"),
           "detect.isolate": ("auto", "on", "off")}
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_ranges(node, where: str) -> None:
    for f in dataclasses.fields(node):
        value, name = getattr(node, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, name + ".")
        elif "range" in f.metadata:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            check_range(value, *f.metadata["range"], name)


def check_config(cfg: CurateConfig) -> None:
    """Every number in its range and every word one of its choices, or ValueError naming the
    option: run before any work, so a bad value never reaches a photo."""
    _check_ranges(cfg, "")
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            what = "detector" if key == "detect.backend" else key
            raise ValueError(f"unknown {what} {value!r}: choose {', '.join(allowed)}")
    if not _DEVICE.match(str(cfg.detect.device)):
        raise ValueError(f"detect.device {cfg.detect.device!r}: use auto, cpu, cuda, cuda:N or mps")
    parse_part(cfg.part)
