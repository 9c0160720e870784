"""What counts as an image, on disk and in a shard, and the normalisation every model input gets.

One definition so that curate, fine-tuning, the sandbox and the benchmarks accept the same
files: a folder that curate reads in full is not read in part by another stage.
"""
from __future__ import annotations

# File suffixes Pillow decodes that face photos come in (lower case, with the dot).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm", ".pbm", ".pnm"})
# Member extensions of an image in a webdataset sample, in the order a reader prefers them.
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

# ImageNet channel statistics: torchvision's pretrained trunks and the SwAV recipe normalise with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_image_file(name: str) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_SUFFIXES
