"""Options of `facesift embed` and `facesift redundancy`: dataclasses with working defaults.

The duplicate threshold was chosen on aligned face crops (curated sandbox shards whose photos
are variants of shared sources): cosine 0.85 on the mean-centred default embedding gives pair
precision ~0.9 at recall ~0.8 there. Other embeddings (a SwAV backbone) need their own value:
the report's threshold sweep and NN-similarity histogram are there to pick it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmbedConfig:
    backbone: str | None = None      # backbone.pt; None -> the weight-free `embedding` below
    embedding: str = "hog"           # weight-free embedding without a backbone: hog | dct
    arch: str | None = None          # torchvision ResNet name; inferred from the checkpoint when None
    image_size: int = 224            # CNN input side (pixels); the DCT embedding has its own size
    batch_size: int = 64
    workers: int = 4                 # decode threads (PIL releases the GIL while decoding)
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    amp: bool = True                 # bf16 autocast on CUDA
    channels_last: bool = True
    hog_size: int = 32               # hog: grey image resized to hog_size x hog_size, cells of hog_cell px
    hog_cell: int = 4
    dct_size: int = 32               # dct: grey image resized to dct_size x dct_size ...
    dct_keep: int = 16               # ... keeping the dct_keep x dct_keep lowest frequencies minus DC
    hashes: bool = True              # pHash/dHash (read from the shard json when curate stored them)
    chunk_rows: int = 2048           # rows between resume checkpoints (ledger + fsync)
    max_batches: int | None = None   # stop after this many batches (for tests, or sampling a prefix)


@dataclass
class SearchConfig:
    k: int = 32                      # neighbours per row kept in the k-NN graph: memory O(N*k)
    exact_max: int = 1_000_000       # above this many rows an approximate index is used
    index: str = "auto"              # auto | flat | ivf | hnsw
    nlist: int | None = None         # IVF lists; None -> 4*sqrt(N)
    nprobe: int = 32
    hnsw_m: int = 32
    train_max: int = 256_000         # training sample for IVF (and k-means)
    recall_sample: int = 2000        # queries used to measure an approximate index against exact search
    gpu: str = "auto"                # auto | on | off
    query_block: int = 16384
    max_pairs: int = 200_000_000     # refuse to materialise more pairs than this (a threshold that is far too low)


@dataclass
class RedundancyConfig:
    by: str = "emb"                  # which signal defines a duplicate: emb | phash | dhash | emb+phash
    threshold: float = 0.85          # cosine similarity at/above which two embeddings are duplicates
    hamming: int = 8                 # pHash/dHash Hamming distance at/below which two images are duplicates
    center: bool = True              # subtract the dataset mean embedding and re-normalise before searching
    sweep: list[float] = field(default_factory=lambda: [0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94,
                                                        0.96, 0.98, 0.99])
    grouping: str = "components"     # components | semdedup
    keep: str = "easy"               # which member of a group is kept: easy | hard | random
    clusters: int | None = None      # spherical k-means clusters; None -> about sqrt(N), 2..4096
    kmeans_iters: int = 20
    kmeans_redo: int = 1             # k-means restarts (the best objective wins)
    seed: int = 0
    nn_sample: int = 50_000          # rows whose NN similarity is histogrammed (all rows if fewer)
    gallery_groups: int = 12         # largest duplicate groups shown in the report
    gallery_members: int = 10
    gallery_outliers: int = 24
    thumb_size: int = 72
    top_owners: int = 25
    search: SearchConfig = field(default_factory=SearchConfig)
