"""Options of `facesift embed` and `facesift redundancy`: dataclasses with working defaults.

The duplicate threshold has no constant default: a fixed cosine (0.85 was one) lost two copies
in three on re-encoded face crops and still merged frames of one Yale subject, because the
right value depends on the embedder, the crops and how dense the dataset is. `threshold` and
`hamming` left at None are calibrated per run on copies of the dataset's own images at
`calibrate.target_precision` (`analysis.calibrate`), and candidate pairs are verified
(`analysis.verify_pairs`); an explicit value still wins.

Every number is range-checked when the config is resolved (`bounded`) and every choice by
`check()`, so a bad value stops the command (exit 2) before it reads a shard or writes a file:
a cosine threshold of 5 would otherwise run the whole search to report that nothing is a duplicate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from facesift.common.config import bounded, bounded_list

EMBEDDINGS = ("hog", "dct")
BY = ("emb", "phash", "dhash", "emb+phash")
GROUPINGS = ("components", "semdedup")
KEEP = ("easy", "hard", "random")
INDEXES = ("auto", "flat", "ivf", "hnsw")
GPU = ("auto", "on", "off")
IVF_STORAGE = ("fp16", "flat")
COPY_FAMILIES = ("jpeg", "rescale", "crop", "relight", "rotate", "flip")  # calibration copies (analysis.calibrate)
HASH_BITS = 64                       # pHash / dHash: 8 bytes each, so a Hamming distance is 0..64


def _choose(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


@dataclass
class EmbedConfig:
    backbone: str | None = None      # backbone.pt; None -> the weight-free `embedding` below
    embedding: str = "hog"           # weight-free embedding without a backbone: hog | dct
    arch: str | None = None          # torchvision ResNet name; inferred from the checkpoint when None
    image_size: int = bounded(224, 16, 4096)  # CNN input side (pixels); the DCT embedding has its own size
    batch_size: int = bounded(64, 1, 65536)
    workers: int = bounded(4, 1, 256)  # decode threads (PIL releases the GIL while decoding)
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    amp: bool = True                 # bf16 autocast on CUDA
    channels_last: bool = True
    hog_size: int = bounded(32, 4, 1024)  # hog: grey image resized to hog_size x hog_size, cells of hog_cell px
    hog_cell: int = bounded(4, 1, 1024)
    dct_size: int = bounded(32, 2, 1024)  # dct: grey image resized to dct_size x dct_size ...
    dct_keep: int = bounded(16, 2, 1024)  # ... keeping the dct_keep x dct_keep lowest frequencies minus DC
    hashes: bool = True              # pHash/dHash (read from the shard json when curate stored them)
    chunk_rows: int = bounded(2048, 1)  # rows between resume checkpoints (ledger + fsync)
    max_batches: int | None = bounded(None, 1)  # stop after this many batches (for tests, or sampling a prefix)

    def check(self) -> None:
        """The checks a range cannot express; ValueError (exit 2) before any work."""
        if not self.backbone:
            _choose(self.embedding, EMBEDDINGS, "embedding")
        if self.hog_cell > self.hog_size:
            raise ValueError(f"hog_cell {self.hog_cell} is larger than hog_size {self.hog_size}")
        if self.dct_keep > self.dct_size:
            raise ValueError(f"dct_keep {self.dct_keep} is larger than dct_size {self.dct_size}")


@dataclass
class SearchConfig:
    k: int = bounded(32, 1, 4096)    # neighbours per row kept in the k-NN graph: memory O(N*k)
    exact_max: int = bounded(50_000, 1)  # above this many rows an approximate index is used (flat: O(N^2) time)
    index: str = "auto"              # auto | flat | ivf | hnsw
    nlist: int | None = bounded(None, 1)  # IVF lists; None -> ~3*sqrt(N) (neardup.ivf_lists)
    nprobe: int | None = bounded(None, 1)  # IVF lists searched per query; None -> tuned on a pilot to target_recall
    target_recall: float = bounded(0.99, 0.5, 1.0)  # pilot recall of close neighbours (at/above the median NN similarity)
    ivf_storage: str = "fp16"        # fp16 | flat: how IVF stores the vectors (similarities are re-scored exactly)
    ivf_train_iters: int = bounded(5, 1, 100)  # k-means iterations for the IVF lists (the pilot makes up for rough lists)
    ivf_train_per_list: int = bounded(39, 39, 1024)  # training points per IVF list, at most (faiss's minimum)
    hnsw_m: int = bounded(32, 2, 1024)
    train_max: int = bounded(256_000, 1)  # training sample for IVF (and k-means)
    recall_sample: int = bounded(1000, 1)  # queries (pilot and recall) against exact search: ~20 s at 1.5M rows on 2 cores
    gpu: str = "auto"                # auto | on | off
    query_block: int = bounded(16384, 1)
    parts: int = bounded(1, 1, 100_000)  # k-NN graph searched in this many row slices, merged (analysis.knn_parts)
    max_pairs: int = bounded(200_000_000, 1)  # refuse to materialise more pairs than this (a threshold far too low)


@dataclass
class CalibrateConfig:
    """How the threshold is calibrated on the dataset (analysis.calibrate)."""
    sample: int = bounded(300, 10, 100_000)  # dataset images the known copies are made from
    copies_per_image: int = bounded(2, 1, 16)  # copies of each sampled image (families dealt round-robin)
    families: list[str] = field(default_factory=lambda: list(COPY_FAMILIES))
    target_precision: float = bounded(0.99, 0.5, 0.9999)  # estimated precision the threshold is chosen for
    candidate_precision: float = bounded(0.2, 0.01, 0.9999)  # first stage's precision when pairs are verified after
    min_copy_mass: float = bounded(0.5, 0.05, 1.0)  # base rate estimated where at least this share of copies survive


@dataclass
class VerifyConfig:
    """The second look at candidate pairs (analysis.verify_pairs)."""
    enabled: bool = True             # verify candidate pairs on aligned thumbnails (`--no-verify`: off)
    threshold: float | None = bounded(None, -1.0, 1.0)  # score at/above which a pair stays; None: calibrated
    recall: float = bounded(0.99, 0.5, 1.0)  # share of the known copies (past the first stage) kept, at least
    min_recall: float = bounded(0.95, 0.5, 1.0)  # ... and down to this share when the target precision is out of reach
    size: int = bounded(96, 32, 512)  # thumbnail side (pixels)
    window: int = bounded(13, 3, 63)  # local correlation window (pixels)
    mirror: bool = True              # a mirrored copy is a copy
    workers: int = bounded(2, 1, 256)  # threads scoring pairs
    max_pairs: int = bounded(2_000_000, 1)  # candidate pairs at most (~4 ms each per core); stage one tightens to fit


@dataclass
class RedundancyConfig:
    by: str = "emb"                  # which signal defines a duplicate: emb | phash | dhash | emb+phash
    threshold: float | None = bounded(None, -1.0, 1.0)  # cosine at/above which rows are duplicates; None: calibrated
    hamming: int | None = bounded(None, 0, HASH_BITS)  # Hamming distance at/below: duplicates; None: calibrated
    center: bool = True              # subtract the dataset mean embedding and re-normalise before searching
    sweep: list[float] = bounded_list([0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98, 0.99],
                                      -1.0, 1.0)
    grouping: str = "components"     # components | semdedup
    keep: str = "easy"               # which member of a group is kept: easy | hard | random
    clusters: int | None = bounded(None, 1)  # spherical k-means clusters; None -> about sqrt(N), 2..4096
    kmeans_iters: int = bounded(20, 1)
    kmeans_redo: int = bounded(1, 1)  # k-means restarts (the best objective wins)
    seed: int = bounded(0, 0, 2**32 - 1)  # numpy's generators take no negative seed
    nn_sample: int = bounded(50_000, 1)  # rows whose NN similarity is histogrammed (all rows if fewer)
    gallery_groups: int = bounded(12, 0)  # largest duplicate groups shown in the report
    gallery_members: int = bounded(10, 1)
    gallery_outliers: int = bounded(24, 0)
    thumb_size: int = bounded(72, 8, 1024)
    top_owners: int = bounded(25, 1)
    search: SearchConfig = field(default_factory=SearchConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def check(self) -> None:
        """The checks a range cannot express; ValueError (exit 2) before any work."""
        _choose(self.by, BY, "by")
        if not self.calibrate.families:
            raise ValueError("calibrate.families: give at least one of " + ", ".join(COPY_FAMILIES))
        for family in self.calibrate.families:
            _choose(family, COPY_FAMILIES, "calibrate.families")
        if self.verify.window >= self.verify.size // 2:
            raise ValueError(f"verify.window {self.verify.window} must be under half of verify.size {self.verify.size}")
        _choose(self.grouping, GROUPINGS, "grouping")
        _choose(self.keep, KEEP, "keep")
        _choose(self.search.index, INDEXES, "search.index")
        _choose(self.search.gpu, GPU, "search.gpu")
        _choose(self.search.ivf_storage, IVF_STORAGE, "search.ivf_storage")
        if self.grouping == "semdedup" and self.by != "emb":
            raise ValueError("grouping=semdedup works on embeddings: use --by emb")
