"""`CurateConfig`: every option of `facesift curate`, one dataclass tree with working defaults.

Sections mirror the pipeline's replaceable steps (download → detect → filter → align → write)
so a YAML file or `--set detect.batch_size=64` reaches exactly one step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class DownloadConfig:
    workers: int = 16                 # download + decode threads
    cpu_slots: int = 0                # of those, how many decode/process at once; 0 = CPU count
    queue_size: int = 0               # images in flight ahead of the detector; 0 = 8 × workers
    per_host: int = 8                 # concurrent connections to one host
    timeout: float = 20.0             # seconds per connect / read
    retries: int = 3                  # extra attempts for timeouts, connection errors, 429/5xx
    backoff: float = 0.5              # first backoff (s); doubles per attempt, jittered
    max_bytes: int = 30_000_000       # byte cap per image
    max_pixels: int = 89_478_485      # decompression-bomb cap (PIL's default), checked before decoding
    min_side: int = 32                # smaller images are skipped
    user_agent: str = "facesift/0.1 (+https://github.com/facesift)"
    dedupe: bool = True               # skip photos whose bytes equal an already curated photo
    draft: int = 0                    # >0: decode JPEGs at a reduced scale, sides ≥ this (set for --detector none)


@dataclass
class DetectConfig:
    backend: str = "mtcnn"            # mtcnn | scrfd | none
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    batch_size: int = 16              # images per detector call (grouped by size)
    min_score: float = 0.8            # candidate floor; faces below filter.min_score are counted rejections
    min_face_px: int = 48             # smallest face box searched (detector px; ≈1.5× min inter-ocular)
    max_side: int = 1280              # images are downscaled to this long side for detection
    pad: str = "auto"                 # square: zero-pad to S×S so mixed sizes batch; auto = on CUDA only; none
    workers: int = 0                  # detector batches run side by side; 0 = auto (CPU: min(cores, 8); CUDA: 1)
    threads: int = 0                  # torch threads per CPU detector worker; 0 = cores // workers
    isolate: str = "auto"             # run the detector in its own process (own GIL): auto = on CUDA; on; off
    scrfd_model: str = ""             # path to an SCRFD/RetinaFace .onnx (insightface)
    scrfd_input: int = 640            # SCRFD square input size


@dataclass
class FilterConfig:
    min_interocular: float = 32.0     # source pixels between the eye centres
    min_score: float = 0.95           # detection probability kept (MTCNN: 0.95)
    max_faces: int = 20               # keep at most this many (largest) faces per photo; 0 = no cap
    min_sharpness: float = 0.0        # variance of the Laplacian on the crop at 128 px grey; 0 = off
    max_yaw: float = 0.0              # degrees, estimated from 5 landmarks; 0 = off
    measures: bool = True             # sharpness, pHash, dHash in each sample's json; false is honoured
                                      # only by --detector none (faces are always measured)


@dataclass
class AlignConfig:
    crop_size: int = 256              # output side (pixels)
    eye_distance: float = 0.25        # inter-ocular distance as a fraction of the crop (loose: context)
    eye_y: float = 0.46               # eye line height as a fraction of the crop
    jpeg_quality: int = 95
    workers: int = 0                  # align + encode threads; 0 = min(4, CPU count)


@dataclass
class ShardConfig:
    maxcount: int = 10_000            # samples per shard
    maxsize: int = 1_000_000_000      # bytes per shard
    mtime: float = 1_577_836_800.0    # fixed tar member mtime (2020-01-01) → byte-identical shards


@dataclass
class CurateConfig:
    catalog: str = ""                 # catalog.sqlite from `facesift crawl`
    from_dir: str = ""                # or: an image folder (recursive)
    from_urls: str = ""               # or: .txt (one URL a line), .csv or .parquet with a `url` column
    out: str = "work/shards"
    part: str = ""                    # "K/N": process slice K (0-based) of N
    part_seed: int = 0
    limit: int = 0                    # process at most this many pending photos (0 = all)
    retry_failed: bool = False        # put photos that failed before (timeouts, 5xx ...) back in the queue
    download: DownloadConfig = field(default_factory=DownloadConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)


_PART_ENV = (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS"),
             ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"))


def parse_part(text: str) -> tuple[int, int] | None:
    """"K/N" → (K, N) with 0 ≤ K < N; "" → None (the whole work list).

    "auto" reads the launcher's environment: torchrun (RANK/WORLD_SIZE), SLURM tasks
    (SLURM_PROCID/SLURM_NTASKS) or a SLURM array (SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT,
    0-based ids); with none of them set it is the whole work list.
    """
    if not text:
        return None
    if str(text) == "auto":
        for k_name, n_name in _PART_ENV:
            if os.environ.get(k_name) and os.environ.get(n_name):
                text = f"{os.environ[k_name]}/{os.environ[n_name]}"
                break
        else:
            return None
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--part expects K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"--part {text}: need 0 <= K < N")
    return k, n
