"""Analysis: embeddings, perceptual hashes, near-duplicates and redundancy reports (faiss, imagehash).

config      EmbedConfig / RedundancyConfig / SearchConfig: the stage options and their defaults
embedders   what a row is: pooled backbone features, or the weight-free HOG / DCT embeddings
embed       streaming, resumable (DDP-sliced) embedding of shards into a float16 memmap + keys/meta;
            damaged shards refused before any row (rows follow the index), one lock per output dir
hashes      pHash/dHash as packed bits (reused from curate's json, else computed with imagehash)
neardup     faiss k-NN graph (exact, or IVF tuned on a pilot), exact pairs at a threshold, Hamming search
knn_parts   the k-NN graph in parts (`--part K/N`, other machines), merged with faiss.ResultHeap
rowimages   the images behind embedding rows, read back from the shards info.json names
calibrate   known copies of a sample of the dataset (at its effective resolution) and the estimators
            that turn them into a threshold at a target precision (pair mixture; non-copy tail)
verify_pairs the second look at candidate pairs: aligned thumbnails (affine ECC, detail matching,
            worst-window correlation), so frames of one session and photos of one person stay apart
thresholds  one run's thresholds: given or calibrated, candidates verified; summary.json's record
groups      duplicate groups: connected components or SemDeDup-style, keep policy easy/hard/random
measures    threshold sweep, spherical k-means + effective number of clusters, NN stats, breakdowns
report      the self-contained report.html (matplotlib Agg plots, inline thumbnails, self-check)
redundancy  the `redundancy` stage end to end: embeddings in, groups/keep lists/summary/report out
selection   cluster-balanced nested selection, the `--method cluster-balanced` of `facesift shards split`
dupset      known-duplicate evaluation sets (originals + transformed copies, with ground truth): the
            issue #13 near-duplicate set and the hard-negative set with held-out edits
"""
