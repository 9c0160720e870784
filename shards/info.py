"""`shards info`: what a shard set holds — counts, sizes, provenance — without decoding an image.

Only the json members are read (local shards seek past the jpgs), so a summary of a large
set costs a fraction of a full pass. Counts are additive per shard, which lets shards be
summarised in parallel and merged. A damaged shard adds the complete samples before its damage
and is listed under `damaged` (shards/damaged.py): the counts are what every reader gets.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from facesift.common.images import SHARD_IMAGE_EXTS
from facesift.common.licenses import license_label
from facesift.shards.damaged import DamageTally
from facesift.shards.index import shard_urls
from facesift.shards.reader import DamagedShard, iter_samples, shard_nbytes

NUMERIC_FIELDS = ("score", "sharpness", "yaw")
BREAKDOWNS = ("license", "source", "query", "detector")


def _empty() -> dict[str, Any]:
    return {"shards": 0, "samples": 0, "bytes": 0, "image_bytes": 0, "without_json": 0,
            "bad_json": 0, "photos": set(), "crop_size": Counter(), "damaged": [],
            **{name: Counter() for name in BREAKDOWNS},
            "numeric": {name: [0, 0.0, math.inf, -math.inf] for name in NUMERIC_FIELDS}}


def _crop_label(meta: dict) -> str:
    crop = meta.get("crop_size")
    if isinstance(crop, (list, tuple)) and len(crop) == 2:
        return f"{crop[0]}x{crop[1]}"
    return f"{crop}x{crop}" if crop is not None else "unknown"


def shard_info(url: str) -> dict[str, Any]:
    """Counts for one shard (json members only); a damaged shard counts its complete samples
    before the damage and says so under `damaged` (returned, not raised: this runs in workers)."""
    stats = _empty()
    stats["shards"] = 1
    stats["bytes"] = shard_nbytes(url) or 0
    streamed = 0
    try:
        for sample in iter_samples(url, extensions={"json"}):
            streamed += _count_sample(stats, sample)
    except DamagedShard as exc:
        stats["damaged"].append({"shard": exc.url, "reason": exc.reason, "samples": exc.samples})
    if not stats["bytes"]:
        stats["bytes"] = streamed  # remote shard: the members' bytes are the best estimate
    return stats


def _count_sample(stats: dict[str, Any], sample: dict) -> int:
    """Add one sample to `stats`; returns its members' bytes (the size estimate of a remote shard)."""
    stats["samples"] += 1
    sizes = sample["__sizes__"]
    stats["image_bytes"] += sum(v for k, v in sizes.items() if k in SHARD_IMAGE_EXTS)
    if "json" not in sample:
        stats["without_json"] += 1
        return sum(sizes.values())
    try:
        meta = json.loads(sample["json"])
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except ValueError:
        stats["bad_json"] += 1
        return sum(sizes.values())
    stats["crop_size"][_crop_label(meta)] += 1
    stats["license"][license_label(meta.get("license"))] += 1
    for name in ("source", "query", "detector"):
        value = meta.get(name)
        stats[name][str(value) if value not in (None, "") else "unknown"] += 1
    if meta.get("photo_id") is not None:
        stats["photos"].add(str(meta["photo_id"]))
    for name in NUMERIC_FIELDS:
        value = meta.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            acc = stats["numeric"][name]
            acc[0] += 1
            acc[1] += float(value)
            acc[2] = min(acc[2], value)
            acc[3] = max(acc[3], value)
    return sum(sizes.values())


def _merge(total: dict[str, Any], part: dict[str, Any]) -> None:
    for name in ("shards", "samples", "bytes", "image_bytes", "without_json", "bad_json"):
        total[name] += part[name]
    total["photos"] |= part["photos"]
    total["damaged"].extend(part["damaged"])
    for name in ("crop_size", *BREAKDOWNS):
        total[name].update(part[name])
    for name in NUMERIC_FIELDS:
        a, b = total["numeric"][name], part["numeric"][name]
        total["numeric"][name] = [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]


def collect_info(spec: Any, workers: int = 1, progress: bool = True,
                 tally: DamageTally | None = None) -> dict[str, Any]:
    """Summary of every shard of `spec` as a JSON-ready dict; damaged shards (named in index
    order, one warning each) go to `tally` too, and to the summary's `damaged` list."""
    from facesift.common.progress import progress as progress_bar

    urls = shard_urls(spec)
    total = _empty()
    with progress_bar(total=len(urls), unit="shard", desc="info", disable=not progress) as bar:
        if workers <= 1 or len(urls) <= 1:
            parts = (shard_info(u) for u in urls)
            for part in parts:
                _merge(total, part)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(urls))) as pool:
                for future in as_completed([pool.submit(shard_info, u) for u in urls]):
                    _merge(total, future.result())
                    bar.update(1)
    order = {url: i for i, url in enumerate(urls)}
    total["damaged"].sort(key=lambda d: order.get(d["shard"], len(order)))
    tally = tally if tally is not None else DamageTally()
    for d in total["damaged"]:
        tally.add(DamagedShard(d["shard"], d["reason"], d["samples"]))
    return _finalise(total)


def _finalise(total: dict[str, Any]) -> dict[str, Any]:
    n = total["samples"]
    numeric = {}
    for name, (count, acc, low, high) in total["numeric"].items():
        if count:
            numeric[name] = {"mean": acc / count, "min": low, "max": high, "count": count}
    return {
        "shards": total["shards"], "samples": n, "bytes": total["bytes"],
        "mean_image_bytes": total["image_bytes"] / n if n else 0.0,
        "photos": len(total["photos"]),
        "samples_without_json": total["without_json"], "samples_with_bad_json": total["bad_json"],
        "crop_size": dict(total["crop_size"].most_common()),
        **{name: dict(total[name].most_common()) for name in BREAKDOWNS},
        "numeric": numeric,
        "damaged_shards": len(total["damaged"]), "damaged": list(total["damaged"]),
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def format_info(info: dict[str, Any], top: int = 10) -> str:
    """The text table `shards info` prints."""
    n = info["samples"]
    lines = [
        f"shards        {info['shards']:>10,}",
        f"samples       {n:>10,}",
        f"photos        {info['photos']:>10,}" + (f"   ({n / info['photos']:.2f} faces/photo)" if info["photos"] else ""),
        f"size          {human_bytes(info['bytes']):>10}   (mean image {human_bytes(info['mean_image_bytes'])})",
    ]
    for label, key in (("without json", "samples_without_json"), ("bad json", "samples_with_bad_json"),
                       ("damaged shards", "damaged_shards")):
        if info[key]:
            lines.append(f"{label:<14}{info[key]:>10,}")
    for name, stats in info["numeric"].items():
        lines.append(f"{name:<14}{stats['mean']:>10.3f}   mean   (min {stats['min']:.3f}, max {stats['max']:.3f})")
    for name in ("crop_size", *BREAKDOWNS):
        counts = info[name]
        if not counts:
            continue
        lines.append("")
        lines.append(f"{name.replace('_', ' ')}:")
        items = list(counts.items())
        for value, count in items[:top]:
            share = 100.0 * count / n if n else 0.0
            lines.append(f"  {value[:40]:<40} {count:>10,}  {share:5.1f}%")
        if len(items) > top:
            rest = sum(c for _, c in items[top:])
            lines.append(f"  {'(' + str(len(items) - top) + ' more)':<40} {rest:>10,}  {100.0 * rest / n:5.1f}%")
    return "\n".join(lines)
