"""One photo → its shard samples: the faces that pass the filters, aligned, measured, JPEG-encoded,
each with the photo's provenance (or, with `--detector none`, the whole image resized and cropped)."""
from __future__ import annotations

import collections
import io

from PIL import Image

from facesift.common.geometry import estimate_yaw, interocular
from facesift.common.licenses import license_url
from facesift.curate.align import align_face, resize_center_crop
from facesift.curate.config import CurateConfig
from facesift.curate.download import Fetched
from facesift.curate.filters import crop_measures, select_faces, sharp_enough
from facesift.shards.format import make_key


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def provenance(row: dict, fetched: Fetched) -> dict:
    """Where a photo came from and under which licence: the start of each of its faces' json."""
    return {
        "photo_id": str(row["id"]), "source": row.get("source") or "flickr",
        "license": row.get("license"), "license_url": license_url(row.get("license")),
        "owner": row.get("owner"), "ownername": row.get("ownername"), "title": row.get("title"),
        "query": row.get("query"), "url": row.get("url"), "sha256": fetched.sha256,
    }


def face_samples(fetched: Fetched, dets, cfg: CurateConfig, detector_name: str,
                 image: Image.Image | None = None) -> tuple[list[dict], collections.Counter]:
    """The shard samples (key, jpg, json) of one photo ([] when no face passes the filters) and
    the per-filter rejection counts. Pure: runs on the encode pool, or (`--detector none`, given
    the decoded PIL `image`) on the download thread that fetched the photo."""
    rejected: collections.Counter = collections.Counter()
    # alignment reads the decoded array directly (only each face's region): no PIL copy of the photo
    w, h = image.size if image is not None else (fetched.image.shape[1], fetched.image.shape[0])
    if fetched.source_size:
        w, h = fetched.source_size  # the size the photo has, even when decoded at reduced scale
    base = provenance(fetched.row, fetched)
    size = cfg.align.crop_size
    crops: list[tuple[Image.Image, dict]] = []
    if dets is None:  # --detector none: the whole image
        crop = resize_center_crop(image if image is not None else Image.fromarray(fetched.image), size)
        crops.append((crop, {"bbox": [0.0, 0.0, float(w), float(h)], "landmarks": None, "score": None,
                             "yaw": None, "interocular": None}))
    else:
        yaws, iods = estimate_yaw(dets.landmarks), interocular(dets.landmarks)
        for i in select_faces(dets, cfg.filter, rejected):
            crop, _ = align_face(fetched.image if image is None else image, dets.landmarks[i], cfg.align)
            crops.append((crop, {
                "bbox": [round(float(v), 2) for v in dets.boxes[i]],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in dets.landmarks[i]],
                "score": round(float(dets.scores[i]), 5), "yaw": round(float(yaws[i]), 2),
                "interocular": round(float(iods[i]), 2)}))
    measure = dets is not None or cfg.filter.measures  # whole images may skip them (filter.measures)
    samples = []
    for crop, geo in crops:
        if measure:
            sharp, phash, dhash = crop_measures(crop)
            if dets is not None and not sharp_enough(sharp, cfg.filter, rejected):
                continue
            measures = {"phash": phash, "dhash": dhash, "sharpness": round(sharp, 3)}
        else:
            measures = {"phash": None, "dhash": None, "sharpness": None}
        index = len(samples)
        meta = {**base, "face_index": index, **geo, "source_size": [w, h], "detector": detector_name,
                "crop_size": size, **measures}
        samples.append({"__key__": make_key(base["photo_id"], index),
                        "jpg": encode_jpeg(crop, cfg.align.jpeg_quality), "json": meta})
    return samples, rejected


def whole_image_samples(fetched: Fetched, image: Image.Image, cfg: CurateConfig):
    """`--detector none`: the download thread's post-processing step (`download(post=...)`)."""
    return face_samples(fetched, None, cfg, "none", image=image)
