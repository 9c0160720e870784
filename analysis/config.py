"""Options of `facesift embed` and `facesift redundancy`: dataclasses with working defaults.

The duplicate threshold was chosen on aligned face crops (curated sandbox shards whose photos
are variants of shared sources): cosine 0.85 on the mean-centred default embedding gives pair
precision ~0.9 at recall ~0.8 there. Other embeddings (a SwAV backbone) need their own value:
the report's threshold sweep and NN-similarity histogram are there to pick it.

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
    exact_max: int = bounded(1_000_000, 1)  # above this many rows an approximate index is used
    index: str = "auto"              # auto | flat | ivf | hnsw
    nlist: int | None = bounded(None, 1)  # IVF lists; None -> 4*sqrt(N)
    nprobe: int = bounded(32, 1)
    hnsw_m: int = bounded(32, 2, 1024)
    train_max: int = bounded(256_000, 1)  # training sample for IVF (and k-means)
    recall_sample: int = bounded(2000, 1)  # queries used to measure an approximate index against exact search
    gpu: str = "auto"                # auto | on | off
    query_block: int = bounded(16384, 1)
    max_pairs: int = bounded(200_000_000, 1)  # refuse to materialise more pairs than this (a threshold far too low)


@dataclass
class RedundancyConfig:
    by: str = "emb"                  # which signal defines a duplicate: emb | phash | dhash | emb+phash
    threshold: float = bounded(0.85, -1.0, 1.0)  # cosine similarity at/above which two embeddings are duplicates
    hamming: int = bounded(8, 0, HASH_BITS)  # pHash/dHash Hamming distance at/below which two images are duplicates
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

    def check(self) -> None:
        """The checks a range cannot express; ValueError (exit 2) before any work."""
        _choose(self.by, BY, "by")
        _choose(self.grouping, GROUPINGS, "grouping")
        _choose(self.keep, KEEP, "keep")
        _choose(self.search.index, INDEXES, "search.index")
        _choose(self.search.gpu, GPU, "search.gpu")
        if self.grouping == "semdedup" and self.by != "emb":
            raise ValueError("grouping=semdedup works on embeddings: use --by emb")
