"""The known-duplicate sets of `analysis.dupset`, stored the way `curate --detector none` stores
photos, for the tests and `tools/bench_redundancy.py` alike.

It sits at the top of the house because it needs curate (crop, hashes, MTCNN) and analysis
(the sets) together, and neither stage may import the other.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SHARD_NAME = "set-000000.tar"


def curate_none_store(image: Image.Image, meta: dict) -> tuple[bytes, dict]:
    """What `curate --detector none` writes for a photo: the centred square at 256 px (JPEG q95)
    with its pHash/dHash in the json (curate's own functions)."""
    from facesift.curate.align import resize_center_crop
    from facesift.curate.filters import crop_measures
    from facesift.curate.samples import encode_jpeg
    crop = resize_center_crop(image.convert("RGB"), 256)
    _, phash, dhash = crop_measures(crop)
    return encode_jpeg(crop, 95), {**meta, "phash": phash, "dhash": dhash, "detector": "none", "crop_size": 256}


def photo_faces(shared: Path) -> list[tuple[str, Image.Image]]:
    """(`<photo>#<n>`, aligned crop) of every face MTCNN finds in `shared`/photos, aligned as
    curate aligns them: the multi-face photos' other faces are hard negatives."""
    from facesift.curate.align import align_face
    from facesift.curate.config import AlignConfig, DetectConfig
    from facesift.curate.detect import MTCNNDetector
    detector = MTCNNDetector(DetectConfig(device="cpu", min_score=0.95))
    faces = []
    for path in sorted((Path(shared) / "photos").iterdir()):
        if path.suffix == ".pts":
            continue
        image = Image.open(path).convert("RGB")
        (found,) = detector.detect([np.asarray(image)])
        faces += [(f"{path.stem}#{n}", align_face(image, found.landmarks[n], AlignConfig())[0])
                  for n in range(len(found.boxes))]
    return faces


def store_known_set(items: list, root: Path) -> tuple[Path, dict[str, int]]:
    """Write `items` (`analysis.dupset.Item`) as one shard under `root`/shards; (shard dir, key -> family)."""
    from facesift.analysis.dupset import write_items
    shards = Path(root) / "shards"
    return shards, write_items(items, shards / SHARD_NAME, curate_none_store)
