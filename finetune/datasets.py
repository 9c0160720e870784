"""Labelled face datasets as lists of records, and the torch Dataset that turns them into tensors.

A record is a plain dict — ``{"key", "path", "target", ...}`` — so splitting, fractions and
manifests never touch pixels; images are read only when a Dataset indexes a record, through
`load_image`, which is the single place a file is opened (the tests trace it to prove that the
hyper-parameter search never reads the test split).

Formats read here:
- landmarks5: ``<path> x1..xK y1..yK`` per line (Sun et al. / `../shared/data/landmarks5`);
- iBUG ``.pts`` (``version: 1``, ``n_points: 68``, ``{ x y ... }``, 1-based pixels), one per image;
- classification manifest: CSV with a header ``path,label`` (or JSON list of {path, label});
- regression manifest: CSV ``path,<target1>,<target2>...`` (one column per target);
- verification pairs: ``<path1> <path2> <same 0|1>`` per line (whitespace or comma separated).
"""
from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from facesift.common.imagemodes import to_rgb
from facesift.common.images import IMAGE_SUFFIXES
from facesift.shards.format import sanitize_key

log = logging.getLogger(__name__)

# left/right correspondences for horizontal flips
FLIP_PAIRS = {
    5: [(0, 1), (3, 4)],
    68: ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
         + [(31, 35), (32, 34)] + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
         + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]),
}


def flip_pairs(num_points: int, what: str = "flips") -> list[tuple[int, int]]:
    """The left/right correspondence for `num_points` landmarks; a clear error for an unknown
    layout, because mirroring without swapping would teach (or score) left eyes as right ones."""
    pairs = FLIP_PAIRS.get(num_points)
    if pairs is None:
        raise ValueError(f"{what}: no left/right correspondence known for {num_points} points; disable it")
    return pairs


# indices of the two points whose distance normalises NME "inter-ocular" (outer eye corners for 68)
OCULAR = {5: (0, 1), 68: (36, 45), 19: (6, 11), 98: (60, 72)}


def record_key(rel_path: str) -> str:
    """Key of a sample: its path relative to the dataset root, extension dropped, made shard-safe."""
    return sanitize_key(str(Path(rel_path).with_suffix("")))


def load_image(path: str | Path) -> Image.Image:
    """Every image the fine-tuning stage reads passes through here (RGB, fully decoded, with
    16-bit, float and transparent modes brought to 8-bit tones as curate does)."""
    with Image.open(path) as im:
        rgb = to_rgb(im)
        return im.copy() if rgb is im else rgb   # the file closes with the block


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else root / p


def _bad(path: Path, lineno: int, why: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: {why}")


# Landmarks may lie a little outside the frame (an occluded jaw point at the border of a 300W
# photo); a point further out than this share of the image's side is a wrong label.
OUTSIDE_TOLERANCE = 0.25


def check_points(points: np.ndarray, image: Path, where: str) -> None:
    """Refuse a landmark label that would train or score garbage: NaN/inf, or far off the image.

    Without this a NaN label trains to a NaN loss and the run is stored as finished with
    `nme=nan`; a swapped x/y column scores a plausible but meaningless NME.
    """
    if not np.isfinite(points).all():
        raise ValueError(f"{where}: landmark coordinates must be finite numbers (found NaN or inf)")
    try:
        with Image.open(image) as im:
            w, h = im.size
    except FileNotFoundError:
        raise ValueError(f"{where}: image {image} does not exist") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{where}: cannot read image {image}: {exc}") from None
    lo = -OUTSIDE_TOLERANCE * np.array([w, h])
    hi = (1 + OUTSIDE_TOLERANCE) * np.array([w, h])
    outside = ((points < lo) | (points > hi)).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{where}: point {i} at ({points[i, 0]:g}, {points[i, 1]:g}) lies outside the "
                         f"{w}x{h} image {image.name}")


# ---------------------------------------------------------------- landmarks

def read_landmarks5(path: str | Path, root: str | Path | None = None) -> list[dict]:
    """Records from a ``<path> x1..xK y1..yK`` file (K inferred from the first line)."""
    path = Path(path)
    if path.is_dir():
        path = path / "train.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no landmark list (expected '<image> x1..xK y1..yK' per line)")
    root = Path(root) if root else path.parent
    records, npts = [], None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        values = parts[1:]
        if len(values) % 2 or not values:
            raise _bad(path, lineno, f"expected a path and 2K numbers, got {len(values)} numbers")
        k = len(values) // 2
        if npts is None:
            npts = k
        elif k != npts:
            raise _bad(path, lineno, f"{k} points where earlier lines have {npts}")
        try:
            nums = np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise _bad(path, lineno, "non-numeric coordinate") from None
        pts = np.stack([nums[:k], nums[k:]], axis=1)
        image = _resolve(root, parts[0])
        check_points(pts, image, f"{path}:{lineno}")
        records.append({"key": record_key(parts[0]), "path": str(image), "target": pts})
    if not records:
        raise ValueError(f"{path}: no samples")
    return records


def read_pts(path: str | Path) -> np.ndarray:
    """(N, 2) float32 points from an iBUG .pts file, converted from 1-based to 0-based pixels."""
    text = Path(path).read_text()
    m = re.search(r"n_points:\s*(\d+)", text)
    body = re.search(r"\{(.*?)\}", text, re.S)
    if not m or not body:
        raise ValueError(f"{path}: not an iBUG .pts file (needs 'n_points:' and '{{ x y ... }}')")
    n = int(m.group(1))
    try:
        nums = np.asarray(body.group(1).split(), dtype=np.float32)
    except ValueError:
        raise ValueError(f"{path}: non-numeric coordinate") from None
    if nums.size != 2 * n:
        raise ValueError(f"{path}: n_points {n} but {nums.size // 2} points listed")
    return nums.reshape(n, 2) - 1.0


def read_pts_dir(root: str | Path, box_margin: float = 1.3) -> list[dict]:
    """Records for every image with a sibling ``.pts`` file under `root` (recursive); each gets a
    square crop box around its points enlarged by `box_margin` (the usual ground-truth box)."""
    root = Path(root)
    records = []
    for pts in sorted(root.rglob("*.pts")):
        image = next((pts.with_suffix(e) for e in sorted(IMAGE_SUFFIXES) if pts.with_suffix(e).exists()), None)
        if image is None:
            log.warning("%s: no image beside it, skipped", pts)
            continue
        points = read_pts(pts)
        check_points(points, image, str(pts))
        lo, hi = points.min(0), points.max(0)   # whole photos: crop a square around the face
        box = (float(lo[0] + hi[0]) / 2 + 0.5, float(lo[1] + hi[1]) / 2 + 0.5, float(max(hi - lo)) * box_margin)
        records.append({"key": record_key(str(image.relative_to(root))), "path": str(image),
                        "target": points, "box": box})
    if not records:
        raise ValueError(f"{root}: no .pts files with images")
    return records


def read_landmarks(path: str | Path) -> list[dict]:
    """Either format: a folder of images with ``.pts`` files, or a landmarks5-style list."""
    path = Path(path)
    if path.is_dir() and not (path / "train.txt").exists():
        return read_pts_dir(path)
    return read_landmarks5(path)


# ---------------------------------------------------------------- manifests

def _read_table(path: Path) -> list[dict]:
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        if isinstance(rows, dict):
            rows = rows.get("samples", rows.get("items"))
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a JSON list of objects with 'path'")
        return rows
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_classification(path: str | Path, root: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """Records with integer targets, and the class names (sorted, so indices are stable)."""
    path = Path(path)
    root = Path(root) if root else path.parent
    rows = _read_table(path)
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise ValueError(f"{path}: a classification manifest needs columns 'path' and 'label'")
    classes = sorted({str(r["label"]) for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    records = [{"key": record_key(r["path"]), "path": str(_resolve(root, r["path"])),
                "target": index[str(r["label"])], "label": str(r["label"])} for r in rows]
    return records, classes


def read_regression(path: str | Path, root: str | Path | None = None) -> tuple[list[dict], list[str]]:
    """Records with float32 target vectors, and the target names (CSV columns after 'path')."""
    path = Path(path)
    root = Path(root) if root else path.parent
    rows = _read_table(path)
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{path}: a regression manifest needs a 'path' column and one column per target")
    names = [c for c in rows[0] if c != "path"]
    if not names:
        raise ValueError(f"{path}: no target columns")
    records = []
    for i, r in enumerate(rows, 2):
        try:
            target = np.asarray([float(r[c]) for c in names], dtype=np.float32)
        except (TypeError, ValueError):
            raise _bad(path, i, "non-numeric target") from None
        if not np.isfinite(target).all():
            raise _bad(path, i, "targets must be finite numbers (found NaN or inf)")
        records.append({"key": record_key(r["path"]), "path": str(_resolve(root, r["path"])), "target": target})
    return records, names


def read_pairs(path: str | Path, root: str | Path | None = None) -> list[tuple[str, str, int]]:
    """Verification pairs ``(path1, path2, same)`` with paths resolved against `root`."""
    path = Path(path)
    root = Path(root) if root else path.parent
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#") or parts[0] == "path1":
            continue
        if len(parts) != 3 or parts[2] not in ("0", "1"):
            raise _bad(path, lineno, "expected '<path1> <path2> <0|1>'")
        pairs.append((str(_resolve(root, parts[0])), str(_resolve(root, parts[1])), int(parts[2])))
    if not pairs:
        raise ValueError(f"{path}: no pairs")
    return pairs


def make_pairs(records: Sequence[dict], max_pairs: int = 20000, seed: int = 0) -> list[tuple[str, str, int]]:
    """All genuine pairs and as many impostor pairs (sampled), from records with identity targets."""
    rng = np.random.default_rng(seed)
    by_id: dict[int, list[str]] = {}
    for r in records:
        by_id.setdefault(int(r["target"]), []).append(r["path"])
    genuine = [(a, b, 1) for paths in by_id.values() for i, a in enumerate(paths) for b in paths[i + 1:]]
    paths = [r["path"] for r in records]
    ids = [int(r["target"]) for r in records]
    impostor = [(paths[i], paths[j], 0) for i in range(len(paths)) for j in range(i + 1, len(paths))
                if ids[i] != ids[j]]
    if len(genuine) > max_pairs // 2:
        genuine = [genuine[i] for i in sorted(rng.choice(len(genuine), max_pairs // 2, replace=False))]
    n_imp = max(max_pairs - len(genuine), len(genuine))
    if len(impostor) > n_imp:
        impostor = [impostor[i] for i in sorted(rng.choice(len(impostor), n_imp, replace=False))]
    return genuine + impostor


YALE_CONDITIONS = ("centerlight", "glasses", "happy", "leftlight", "noglasses", "normal",
                   "rightlight", "sad", "sleepy", "surprised", "wink")


def yale_manifest(root: str | Path, label: str = "identity") -> list[dict]:
    """Rows ``{path, label}`` for the Yale faces, labels read from ``subjectNN.<condition>[.ext]``.

    The names hold dots (``subject01.centerlight``, sometimes without an extension), so the
    identity is the part before the first dot and the condition the part after it.
    """
    if label not in ("identity", "expression"):
        raise ValueError(f"label must be 'identity' or 'expression', got {label!r}")
    root = Path(root)
    rows = []
    for p in sorted(root.iterdir()):
        m = re.fullmatch(r"(subject\d+)\.([a-z]+)(\.[A-Za-z]+)?", p.name)
        if not p.is_file() or not m or m.group(2) not in YALE_CONDITIONS:
            continue
        rows.append({"path": p.name, "label": m.group(1) if label == "identity" else m.group(2)})
    if not rows:
        raise ValueError(f"{root}: no Yale faces (subjectNN.<condition>) found")
    return rows


def write_manifest(rows: Sequence[dict], path: str | Path) -> Path:
    """CSV manifest (atomic), columns from the first row; `path` values relative to the file."""
    from facesift.common.atomic import atomic_write
    path = Path(path)
    with atomic_write(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def list_images(path: str | Path) -> list[dict]:
    """Unlabelled records: every image under a folder (recursive), or the paths in a list file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        records = [{"key": record_key(str(p.relative_to(path))), "path": str(p), "target": None} for p in files]
    elif path.is_file():
        records = []
        for line in path.read_text().splitlines():
            parts = line.replace(",", " ").split()
            if parts and not parts[0].startswith("#") and parts[0] != "path":
                records.append({"key": record_key(parts[0]), "path": str(_resolve(path.parent, parts[0])),
                                "target": None})
    else:
        raise FileNotFoundError(f"{path}: no such folder or list of images")
    if not records:
        raise ValueError(f"{path}: no images")
    return records


# ---------------------------------------------------------------- torch side

class RecordDataset:
    """Records -> (image tensor, target) through a per-sample transform (a plain function)."""

    def __init__(self, records: Sequence[dict], transform: Callable[[Image.Image, dict], tuple]):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        try:
            image = load_image(rec["path"])
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read image {rec['path']}: {exc}") from exc
        return self.transform(image, rec)
