"""The common floor: what every stage shares, importing no stage and nothing above.

- config.py     dataclass configs, YAML + `--set` overrides, range-checked fields, secret redaction, saved configs
- atomic.py     temp-file + rename writes so killed jobs leave no half files
- lock.py       one run per output directory (flock; the refusal names the holder's pid)
- logsetup.py   logging format, secret scrubbing, quiet third-party loggers, the one-line summary
- progress.py   tqdm bars on a terminal, one plain line per 30 s in a log
- stopping.py   stop signals (SIGTERM/SIGUSR1/Ctrl-C) honoured at a step boundary
- runtime.py    rank / world size / local rank from torchrun's environment, device choice
- optim.py      AdamW with torch's fused kernel on the CPU (its default loops over the tensors one by one)
- images.py     image file suffixes, shard image members, ImageNet mean/std
- imagemodes.py any Pillow mode (16-bit, float, CMYK, palette, alpha) → 8-bit RGB with its tones
- licenses.py   the Flickr licence table: names and URLs
- geometry.py   the least-squares similarity between landmark sets (curate's alignment, finetune's re-crop)
"""
