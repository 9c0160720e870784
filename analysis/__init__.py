"""Analysis: embeddings, perceptual hashes, near-duplicates and redundancy reports (faiss, imagehash).

config      EmbedConfig / RedundancyConfig / SearchConfig: the stage options and their defaults
embedders   what a row is: pooled backbone features, or the weight-free HOG / DCT embeddings
embed       streaming, resumable (DDP-sliced) embedding of shards into a float16 memmap + keys/meta;
            damaged shards refused before any row (rows follow the index), one lock per output dir
hashes      pHash/dHash as packed bits (reused from curate's json, else computed with imagehash)
neardup     faiss k-NN graph, exact pairs at a threshold, Hamming range search (flat / multi-hash)
groups      duplicate groups: connected components or SemDeDup-style, keep policy easy/hard/random
measures    threshold sweep, spherical k-means + effective number of clusters, NN stats, breakdowns
report      the self-contained report.html (matplotlib Agg plots, inline thumbnails, self-check)
redundancy  the `redundancy` stage end to end: embeddings in, groups/keep lists/summary/report out
selection   cluster-balanced nested selection, the `--method cluster-balanced` of `facesift shards split`
dupset      known-duplicate evaluation sets (originals + transformed copies, with ground truth)
"""
