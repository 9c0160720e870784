"""SwAV pretraining of torchvision ResNets on face shards, from one CPU to many GPUs.

- backbone.py     torchvision ResNet trunks and loading `backbone.pt` safely (shared with analysis/finetune)
- swav.py         the method: head, prototypes, distributed Sinkhorn, swapped-prediction loss, queue, collapse watch
- multicrop.py    multi-crop augmentation: per-image decode + crops, batched flip/jitter/gray/blur/normalise
- data.py         webdataset streaming: resampled/split shards, equal batches per rank, exact resume, bad samples, damaged shards
- optim.py        LARS, warm-up + cosine schedule, param groups (BN/bias optionally excluded)
- distributed.py  process group from torchrun's environment (gloo on CPU, nccl on CUDA)
- config.py       `PretrainConfig` dataclass tree, range-checked (presets in configs/*.yaml)
- train.py        checks, output lock, set-up and the loop: schedule, AMP, channels_last, DDP, stop signals;
                  `python -m facesift.pretrain.train`
- checkpoint.py   last.pt / backbone.pt (atomic), what a checkpoint holds, exact resume, resume checks
- trainlog.py     metrics.csv, TensorBoard and the progress bar of a run (rank 0)
- launch.py       `facesift pretrain --nproc G`: re-run under torchrun, stop signals passed on
"""
