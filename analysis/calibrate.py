"""A duplicate threshold calibrated on the dataset itself, at a target precision.

No constant threshold fits every embedding, crop size and dataset: the cosine of a re-encoded
copy depends on the embedder, and how close the nearest *other* image is depends on how dense
the dataset is (more images, closer neighbours). So the threshold is measured, per run:

1. **Known copies.** A seeded sample of the dataset's own images (a few hundred, read back
   from the shards the embeddings came from) gets copies made with the usual re-upload edits
   (`FAMILIES`: JPEG re-encode, rescale, crop, relight, small rotation, mirror). An edit is
   made at the image's *effective* resolution (a crop that curate upscaled from an 80 px
   source is edited at 80 px: that is the photo a re-upload starts from), then the copy is
   stored the way `curate --detector none` stores a photo (centre square, resized to the
   dataset's size, JPEG q95) and embedded exactly as the dataset was (the embedder that
   `info.json` names, rebuilt from its saved config; the dataset's mean subtracted).
2. **Two distributions.** *copy*: the similarity of each copy to its original. *dataset*:
   the similarities of the dataset's own close pairs — the k-NN graph's entries (each image's
   nearest other image is the histogram the report shows).
3. **The estimator (pairs).** Let C(t) be the number of dataset pairs scoring >= t and S(t) the
   share of copies scoring >= t. The C(t) pairs are D·S_dup(t) true duplicates plus some
   non-duplicates, D being the dataset's (unknown) number of duplicate pairs; with S standing in
   for S_dup, C(t)/S(t) >= D at every t, and near the top of the copy distribution hardly any
   non-duplicate is that close (the mixture-proportion, "irreducibility" assumption), so
       D̂ = min C(t) / S(t) over the copies' quantiles that keep 50, 60, 70, 80, 90 % of them
       expected recall    R(t) = S(t)
       expected precision P(t) = D̂·S(t) / C(t)      (1 when no pair is that close)
   The chosen threshold is the lowest t with P(t) >= the target (default 0.99) — moved up to
   the middle of the gap to the next copy when there is one (same recall, more margin from the
   non-duplicates): P(t) is the precision of *all* pairs at t, not of a slice. When no t
   reaches it, the lowest t above every dataset pair is returned (nothing is called a
   duplicate; R says what that misses).
   The base rate enters through D̂: a dataset without duplicates has D̂ ≈ 0 and so no threshold
   with false positives passes. It is a pair count and treats real duplicates as copy-like, so
   it is as good as that resemblance: real duplicates *easier* than the copies raise D̂ and make
   P optimistic at low thresholds; a mismatch in the shape near the top of the copies makes it
   pessimistic there (on the issue #13 set, alone, it stops at cosine 0.88, recall 0.57, true
   precision 1.0). A few hundred copies measure precision to a few percent, no better. Hence
   copies made at the effective resolution, families the score cannot see at all left out
   (`seen_families`), and pair verification after it by default.

The same estimator serves the hashes, with score = -Hamming distance (the close pairs counted
around the sampled rows and scaled up). Pair verification (`analysis.verify_pairs`) has a
score whose copies crowd at the very top, where this estimator's shape assumption is too
fragile for a 1 % target: `verify_threshold` estimates its precision from the non-copies
instead.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field, fields

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from facesift.analysis.config import COPY_FAMILIES as FAMILIES  # one list, checked by the config

log = logging.getLogger(__name__)
STORE_QUALITY = 95      # how curate stores a sample; a copy in the dataset went through it too


class CalibrationError(RuntimeError):
    """Calibration is impossible here (no images, an embedder that cannot be rebuilt)."""


# ---------------------------------------------------------------------------- copies

def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    out = Image.open(io.BytesIO(buf.getvalue()))
    out.load()
    return out.convert("RGB")


def effective_side(image: Image.Image, tolerance: float = 0.07) -> int:
    """The side an image really has: the smallest of a few downscales that loses (almost)
    nothing — relative RMS change under down- then up-sampling <= `tolerance` (an 80 px crop
    upscaled to 256 comes back at 80; a sharp 256 px crop at 256)."""
    import cv2
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    side = min(grey.shape)
    spread = float(grey.std()) or 1.0
    for scale in (0.25, 0.3125, 0.375, 0.5, 0.625, 0.75):
        small = (max(8, round(grey.shape[1] * scale)), max(8, round(grey.shape[0] * scale)))
        back = cv2.resize(cv2.resize(grey, small, interpolation=cv2.INTER_AREA), grey.shape[::-1],
                          interpolation=cv2.INTER_CUBIC)
        if float(np.sqrt(np.mean((grey - back) ** 2))) / spread <= tolerance:
            return max(8, round(side * scale))
    return side


def _store_like(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """What `curate --detector none` does to a photo: the centred box of the stored aspect,
    resampled once to the stored size (bicubic); then JPEG q95."""
    w, h = image.size
    tw, th = size
    scale = min(w / tw, h / th)
    bw, bh = tw * scale, th * scale
    left, top = max(0.0, (w - bw) / 2), max(0.0, (h - bh) / 2)
    if (w, h) != (tw, th):
        box = (left, top, min(float(w), left + bw), min(float(h), top + bh))
        image = image.resize((tw, th), Image.Resampling.BICUBIC, box=box)
    return _jpeg(image, STORE_QUALITY)


def make_copy(image: Image.Image, family: str, rng: np.random.Generator, effective: int | None = None) -> Image.Image:
    """One known copy of `image` (the calibration family; the benchmarks test with others),
    edited at `effective` pixels on the short side and stored at the image's own size."""
    size = image.size
    src = image
    if effective and effective < min(size):
        f = effective / min(size)
        src = image.resize((max(8, round(size[0] * f)), max(8, round(size[1] * f))), Image.Resampling.BOX)
    w, h = src.size
    if family == "jpeg":
        out = _jpeg(src, int(rng.integers(20, 61)))
    elif family == "rescale":
        s = float(rng.uniform(0.5, 0.8))
        out = src.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BILINEAR)
    elif family == "crop":
        f = float(rng.uniform(0.85, 0.95))
        cw, ch = max(8, round(w * f)), max(8, round(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = src.crop((x0, y0, x0 + cw, y0 + ch))
    elif family == "relight":
        out = ImageEnhance.Brightness(src).enhance(float(rng.uniform(0.75, 1.3)))
        out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.75, 1.3)))
    elif family == "rotate":
        angle = float(rng.uniform(1, 5)) * float(rng.choice([-1, 1]))
        fill = tuple(int(v) for v in np.asarray(src).reshape(-1, 3).mean(0))
        out = src.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    elif family == "flip":
        out = ImageOps.mirror(src)
    else:
        raise ValueError(f"unknown copy family {family!r} (one of {', '.join(FAMILIES)})")
    return _store_like(out, size)


@dataclass
class CopySet:
    """Known copies of sampled dataset rows: copy k is of row `rows[k]`, made with `family[k]`."""
    rows: np.ndarray
    family: list[str]
    copies: list[Image.Image]
    originals: dict[int, Image.Image] = field(default_factory=dict)
    effective: dict[int, int] = field(default_factory=dict)   # row -> side the edits were made at


def sample_rows(valid_rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sample of valid rows, sorted (so the shards are read in order)."""
    rng = np.random.default_rng(seed)
    if len(valid_rows) <= size:
        return np.sort(valid_rows)
    return np.sort(rng.choice(valid_rows, size, replace=False))


def make_copies(originals: dict[int, Image.Image | None], families: tuple[str, ...], per_image: int,
                seed: int) -> CopySet:
    """`per_image` copies of every decodable original, the families dealt round-robin from a
    seeded shuffle so that each is equally represented."""
    rng = np.random.default_rng(seed + 1)
    rows, fam, copies = [], [], []
    order = list(families)
    k = 0
    good = {r: im for r, im in sorted(originals.items()) if im is not None}
    sides = {r: effective_side(im) for r, im in good.items()}
    for r, image in good.items():
        for _ in range(per_image):
            if k % len(order) == 0:
                rng.shuffle(order)
            family = order[k % len(order)]
            k += 1
            rows.append(r)
            fam.append(family)
            copies.append(make_copy(image, family, rng, sides[r]))
    return CopySet(np.asarray(rows, np.int64), fam, copies, good, sides)


# ---------------------------------------------------------------------------- embedding the copies

def rebuild_embedder(info: dict):
    """The embedder that made the embeddings, from `info.json` (its saved EmbedConfig); refused
    when the rebuilt one has another name (another backbone file, size or embedding)."""
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embedders import EmbedError, Embedder
    saved = info.get("config")
    if not isinstance(saved, dict):
        raise CalibrationError("info.json does not say how the embeddings were made (no `config`)")
    known = {f.name for f in fields(EmbedConfig)}
    cfg = EmbedConfig(**{k: v for k, v in saved.items() if k in known})
    try:
        embedder = Embedder(cfg)
    except (EmbedError, FileNotFoundError, OSError, RuntimeError) as exc:
        raise CalibrationError(f"cannot rebuild the embedder of these embeddings ({exc})") from None
    if embedder.name != info.get("embedder"):
        raise CalibrationError(f"the rebuilt embedder is {embedder.name!r}, the embeddings were made by "
                               f"{info.get('embedder')!r}")
    return embedder


def embed_images(embedder, images: list[Image.Image], batch: int = 64) -> np.ndarray:
    """float32 rows, rounded through float16 as embed stores them."""
    out = []
    for a in range(0, len(images), batch):
        out.append(embedder([embedder.prepare(im) for im in images[a:a + batch]]))
    if not out:
        return np.zeros((0, getattr(embedder, "dim", 0)), np.float32)
    return np.concatenate(out).astype(np.float16).astype(np.float32)


def centre(rows: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """What `redundancy.prepare_vectors` does to a row: minus the dataset mean, re-normalised."""
    x = rows.astype(np.float32) - (mean.astype(np.float32) if mean is not None else 0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# ---------------------------------------------------------------------------- the estimator

def _survival(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """P(value >= t) for each t of `grid`."""
    v = np.sort(values)
    return 1.0 - np.searchsorted(v, grid, side="left") / max(1, len(v))


def select_threshold(copy: np.ndarray, pairs: np.ndarray, target: float, min_copy_mass: float = 0.5,
                     weight: float = 1.0, step: float | None = None) -> dict:
    """The lowest threshold whose estimated precision reaches `target` (module docstring).

    `copy`: scores of the known copies; `pairs`: scores of the dataset's close pairs, each
    counting `weight` pairs (0.5 for k-NN entries, which list most pairs from both ends; N /
    (2·sample) for the entries of sampled rows). Scores are "higher = more alike" (pass
    -distance for Hamming); `step` snaps the grid to multiples of it (1 for integer distances),
    otherwise the grid is every observed score."""
    copy = np.asarray(copy, np.float64)
    copy = copy[np.isfinite(copy)]
    pairs = np.asarray(pairs, np.float64).ravel()
    pairs = pairs[np.isfinite(pairs)]
    if len(copy) == 0:
        raise CalibrationError("no known copy could be scored")
    top = float(pairs.max()) if len(pairs) else float(copy.min())
    if step:
        lo = np.floor(min(copy.min(), top) / step) * step
        grid = np.arange(lo, max(copy.max(), top) + 2 * step, step)
    else:
        grid = np.unique(np.concatenate([copy, pairs, [np.nextafter(top, np.inf)]]))
    s_copy = _survival(copy, grid)
    count = weight * len(pairs) * (_survival(pairs, grid) if len(pairs) else np.zeros_like(grid))
    # D̂ at a few survival levels of the copies (their quantiles), not at every grid point: the
    # minimum of hundreds of noisy ratios would sit well below D by chance alone
    levels = np.linspace(min_copy_mass, 1.0, 6)[:-1] if min_copy_mass < 1.0 else np.array([1.0])
    at = np.unique(np.quantile(copy, 1.0 - levels, method="lower"))
    c_at = weight * len(pairs) * (_survival(pairs, at) if len(pairs) else np.zeros_like(at))
    s_at = _survival(copy, at)
    ratio = np.where(s_at > 0, c_at / np.maximum(s_at, 1e-12), np.inf)
    dup_pairs = float(ratio.min()) if len(ratio) and np.isfinite(ratio.min()) else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(count > 0, np.minimum(1.0, dup_pairs * s_copy / count), 1.0)
    ok = np.nonzero(precision >= target)[0]
    if len(ok):
        pick, how = int(ok[0]), "target"
    else:  # not even the top reaches it: call nothing a duplicate
        pick = min(int(np.searchsorted(grid, top, side="right")), len(grid) - 1)
        how = "above-all-pairs"
    # Where no copy lies between the lowest passing threshold and the next copy up, recall is
    # the same anywhere in that gap: take its middle rather than the edge of the non-duplicates.
    hi = pick
    while hi + 1 < len(grid) and s_copy[hi + 1] >= s_copy[pick] - 0.002:
        hi += 1
    if step:
        t = float(grid[(pick + hi) // 2])
    else:
        t = float((grid[pick] + grid[hi]) / 2)
    k = max(0, int(np.searchsorted(grid, t, side="right")) - 1)
    return {"threshold": t, "expected_precision": float(precision[k]),
            "expected_recall": float(_survival(copy, np.array([t]))[0]), "estimated_duplicate_pairs": round(dup_pairs, 1),
            "pairs_at_threshold": round(float(count[k]), 1), "how": how, "target_precision": target,
            "copies": int(len(copy)), "_grid": grid, "_precision": precision, "_recall": s_copy}


def verify_threshold(copy: np.ndarray, candidates: np.ndarray, target: float, recall: float,
                     min_recall: float = 0.95) -> dict:
    """The verification threshold: the lowest score that keeps `recall` of the known copies
    and whose estimated precision over the candidate pairs reaches `target`.

    Copies that score below a floor — halfway between the copies' and the candidates' medians,
    or 30 robust deviations under the copies' median if that is lower — do not lower it (a
    failed alignment, an edit the score does not undo: counted, per family, as missed).

    The verification score has a fixed scale (1: the same picture) on which copies crowd near
    the top and non-copies spread below, so precision is estimated from the *non-copies*, where
    they can be seen: the candidates scoring below (almost) every known copy (under its 0.1 %
    quantile) are taken as non-copies, the upper half of those with a copy-like warp is fitted with an exponential tail
    (peaks over the median), and the false pairs at a threshold v are those observed above v
    plus the tail's share beyond what was observed:
        FP(v) = #pool >= v + n_upper · exp(-λ (max(v, v_clear) - median)),  P(v) = 1 - FP(v) / C(v)
    The threshold may rise above the `recall` point for precision, but never past the point
    that keeps `min_recall` of the copies: when no threshold in between reaches `target`
    (non-copies that score like copies: frames of one session), that floor is taken
    (`how`: recall-floor) — precision first, within a bounded loss of recall.
    (The mixture estimator of `select_threshold` needs the copies' score distribution to match
    the real duplicates' to within 1 - target at its top, which a verification score's narrow
    top does not give; recall is what the copies measure well)."""
    copy = np.asarray(copy, np.float64)
    copy = copy[np.isfinite(copy)]
    cand = np.asarray(candidates, np.float64)
    cand = cand[np.isfinite(cand)]
    if len(copy) == 0:
        raise CalibrationError("no known copy could be scored")
    # copies that score far below the bulk of copies (a failed alignment, an edit the score
    # does not undo) are not allowed to drag the threshold down into the non-copies
    centre = float(np.median(copy))
    spread = 1.4826 * float(np.median(np.abs(copy - centre)))
    typical = float(np.median(cand)) if len(cand) else -1.0
    floor = min((centre + typical) / 2, centre - 30.0 * max(spread, 0.002))
    v_recall = max(float(np.quantile(copy, 1.0 - recall, method="lower")), floor)
    v_clear = max(float(np.quantile(copy, 0.001, method="lower")), floor)
    pool = np.sort(cand[cand < v_clear])
    grid = np.unique(np.concatenate([cand, copy, [v_recall]]))
    grid = grid[grid >= min(v_recall, v_clear)] if len(pool) else grid[grid >= v_recall]
    count = len(cand) * _survival(cand, grid) if len(cand) else np.zeros_like(grid)
    observed = len(pool) * _survival(pool, grid) if len(pool) else np.zeros_like(grid)
    tail = {"pool": int(len(pool)), "v_clear": round(v_clear, 6), "copy_floor": round(floor, 6),
            "copies_below_floor": int((copy < floor).sum())}
    fit = pool[pool > -1.0]          # -1: no copy-like warp exists at all, no tail to speak of
    if len(fit) >= 20:
        base = float(np.median(fit))     # peaks over the median: a deliberately heavy tail
        upper = fit[fit > base] - base
        lam = 1.0 / max(float(upper.mean()) if len(upper) else 1e-4, 1e-4)
        extra = len(upper) * np.exp(-lam * (np.maximum(grid, v_clear) - base))
        tail.update(base=round(base, 6), rate=round(lam, 3), peaks=int(len(upper)))
    else:  # too few non-copies to fit a tail: only the observed ones count
        extra = np.zeros_like(grid)
    fp = observed + extra
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(count > 0, np.clip(1.0 - fp / np.maximum(count, 1e-12), 0.0, 1.0), 1.0)
    v_floor = max(float(np.quantile(copy, 1.0 - min_recall, method="lower")), v_recall)
    ok = np.nonzero((precision >= target) & (grid >= v_recall) & (grid <= v_floor))[0]
    if len(ok):
        pick, how = int(ok[0]), "recall-and-target" if grid[ok[0]] > v_recall else "recall"
    else:  # the target is out of reach: precision first, so give up recall down to `min_recall`
        pick, how = min(int(np.searchsorted(grid, v_floor, side="left")), len(grid) - 1), "recall-floor"
    return {"threshold": float(grid[pick]), "expected_precision": float(precision[pick]),
            "expected_recall": float(np.mean(copy >= grid[pick])), "estimated_false_pairs": round(float(fp[pick]), 2),
            "pairs_at_threshold": int(round(float(count[pick]))), "how": how, "target_precision": target,
            "recall_target": recall, "non_copy_tail": tail, "copies": int(len(copy))}


def seen_families(copy: np.ndarray, families: list[str], nearest: np.ndarray) -> np.ndarray:
    """Mask of the copies whose family the score can see at all: a family whose median copy
    scores below what nine images in ten have as their nearest other image (its 10 % quantile)
    is invisible to it (a mirror image under an embedding that is not mirror-symmetric). Left
    in, such copies would make the estimator expect duplicates down among the non-duplicates."""
    fam = np.asarray(families)
    floor = float(np.quantile(nearest, 0.1)) if len(nearest) else -np.inf
    keep = np.ones(len(copy), bool)
    for f in set(families):
        if float(np.median(copy[fam == f])) < floor:
            keep[fam == f] = False
    return keep if keep.any() else np.ones(len(copy), bool)


def histogram(copy: np.ndarray, nearest: np.ndarray, bins: int = 50, integer: bool = False) -> dict:
    """Shared-bin counts of both distributions (what the report plots; kept in summary.json)."""
    both = np.concatenate([np.asarray(copy, np.float64), np.asarray(nearest, np.float64)])
    both = both[np.isfinite(both)]
    if len(both) == 0:
        return {"edges": [], "copy": [], "nearest": []}
    lo, hi = float(both.min()), float(both.max())
    if integer:
        edges = np.arange(np.floor(lo), np.ceil(hi) + 2) - 0.5
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
    c, _ = np.histogram(copy, edges)
    n, _ = np.histogram(nearest, edges)
    return {"edges": [round(float(e), 5) for e in edges], "copy": c.tolist(), "nearest": n.tolist()}


def public(result: dict) -> dict:
    """The JSON-able part of a `select_threshold` result (the curves stay out of summary.json)."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items() if not k.startswith("_")}


def per_family(scores: np.ndarray, families: list[str], threshold: float) -> dict[str, float]:
    """Share of each family's copies at or above the threshold (what kind of copy is missed)."""
    fam = np.asarray(families)
    return {f: round(float(np.mean(scores[fam == f] >= threshold)), 4) for f in sorted(set(families))}

