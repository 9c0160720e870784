"""A second, geometry-aware look at candidate pairs: copies of one photo, or two photos of one face?

A face embedding (and a hash) puts two photos of the same person, or two frames of one session,
close together: same face, same pose, same background. What separates them from a copy is that a
copy differs from its original by one *global* change — a similarity/affine warp (crop, rescale,
small rotation), a monotone change of grey levels (relight, contrast, gamma), loss of detail
(re-encoding, downscaling, blur) and noise — while another frame differs *locally*: the eyes
close, the mouth opens, glasses come off, the head turns a little so near and far parts move
by different amounts. So, for each candidate pair of small greyscale thumbnails:

1. **align**: affine ECC (OpenCV's `findTransformECC`, coarse to fine from a quarter-size
   thumbnail, starting from up to three zooms) warps B onto A; a warp far from a copy's (scale
   outside 0.6..1.6, a shear, no convergence, a quarter-size match under 0.6) is no copy;
2. **match detail**: of the two, the sharper one is blurred until the pair agrees best
   (global correlation over a small grid of Gaussian sigmas), so that a downscaled, blurred or
   re-encoded copy is compared at its own resolution — and two sharp frames at theirs;
3. **compare locally**: the zero-mean normalised cross-correlation in a sliding window (box
   filters; a small constant keeps flat regions from counting as disagreement), over the part
   both images cover, away from the border; the score is a low quantile (0.5 %) of that map:
   the *worst* region decides, because a closed eye is a few windows of an otherwise equal face.

`mirror=True` also matches B mirrored and refines whichever orientation matches better (a
flipped re-upload is a copy). The score is in [-1, 1] (1 = same picture); -1 when no copy-like
warp exists. It needs no training and no labels; its threshold is calibrated per dataset
(`analysis.calibrate.verify_threshold`) from the scores of known copies. Measured on Yale
frames: copies 0.976..1.0, the same subject with eyes closed 0.958, under other light -1; its
limit is two frames of one session that differ by a slight head movement only (0.94..0.955
for one Yale subject): those score like degraded copies, which is why the threshold gives up
some recall when it cannot certify the target precision. Cost: about 4 ms per pair at 96 px on
one core (ECC dominates); `score_pairs` spreads pairs over threads (OpenCV releases the GIL).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIGMAS = (0.0, 0.7, 1.2, 1.8, 2.5, 3.5)   # detail-matching blurs, in thumbnail pixels
INIT_SCALES = (1.0, 0.88, 1.14)          # ECC starting zooms (a 90% crop is a 1.11x zoom)


@dataclass(frozen=True)
class VerifyParams:
    """How two thumbnails are compared (defaults measured in docs/analysis.md)."""
    size: int = 96          # thumbnail side (pixels)
    window: int = 13        # local correlation window (pixels)
    margin: float = 0.12    # border fraction left out (rotation fill, crop edges)
    quantile: float = 0.005  # low quantile of the local-correlation map that is the score
    stabilizer: float = 0.05  # added to covariance and to the variance product (flat regions)
    base_sigma: float = 0.5  # blur applied to both after matching (JPEG blocking, resampling)
    mirror: bool = True     # also compare B mirrored


def thumbnail(image: Image.Image, size: int) -> np.ndarray:
    """Grey size x size float32, zero mean and unit variance (global brightness/contrast removed)."""
    import cv2
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)
    return ((small - small.mean()) / (small.std() + 1e-6)).astype(np.float32)


def _affine_ok(w: np.ndarray) -> bool:
    """A warp a copy could have: moderate zoom, little shear (ECC can run off to a degenerate one)."""
    a = w[:, :2].astype(np.float64)
    sv = np.linalg.svd(a, compute_uv=False)
    return bool(np.all(np.isfinite(a)) and 0.6 <= sv[1] and sv[0] <= 1.6 and sv[0] / max(sv[1], 1e-9) <= 1.25
                and np.linalg.det(a) > 0)


COARSE_MIN = 0.6   # coarse (quarter-size) ECC correlation below which no copy is looked for further


def _coarse(pyr_a: list, pyr_b: list) -> tuple[np.ndarray | None, float]:
    """Best copy-like warp at the quarter-size level, and its ECC: from no zoom first, and from
    the other starting zooms only when that does not already match well."""
    import cv2
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 15, 1e-4)
    h = pyr_a[0].shape[0]
    best, best_cc = None, -2.0
    for scale in INIT_SCALES:
        w = np.array([[scale, 0, (1 - scale) * h / 2], [0, scale, (1 - scale) * h / 2]], np.float32)
        try:
            cc, w = cv2.findTransformECC(pyr_a[0], pyr_b[0], w, cv2.MOTION_AFFINE, crit, None, 1)
        except cv2.error:
            continue
        if cc > best_cc and _affine_ok(w):
            best, best_cc = w, cc
        if best_cc > 0.85:
            break
    return best, best_cc


def _pyramid(x: np.ndarray) -> list[np.ndarray]:
    import cv2
    size = x.shape[0]
    return [cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA) for s in (size // 4, size // 2)] + [x]


def align(a: np.ndarray, b: np.ndarray, coarse: tuple | None = None) -> np.ndarray | None:
    """2x3 affine warp taking A's pixel grid into B (cv2 convention, WARP_INVERSE_MAP), or None
    (also when the quarter-size match is already too poor for a copy: most non-copies stop there)."""
    import cv2
    pyr_a, pyr_b = _pyramid(a), _pyramid(b)
    best, best_cc = coarse if coarse is not None else _coarse(pyr_a, pyr_b)
    if best is None or best_cc < COARSE_MIN:
        return None
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 15, 1e-4)
    levels = [p.shape[0] for p in pyr_a]
    w = best
    for level in (1, 2):
        w = w.copy()
        w[:, 2] *= levels[level] / levels[level - 1]
        try:
            _, w = cv2.findTransformECC(pyr_a[level], pyr_b[level], w, cv2.MOTION_AFFINE, crit, None, 3)
        except cv2.error:
            return None
    return w if _affine_ok(w) else None


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2
    return cv2.GaussianBlur(x, (0, 0), sigma) if sigma > 0 else x


def _global_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x, y = a[mask], b[mask]
    x = x - x.mean()
    y = y - y.mean()
    return float((x * y).mean() / (x.std() * y.std() + 1e-9))


def _score_aligned(a: np.ndarray, b: np.ndarray, p: VerifyParams, coarse: tuple | None = None) -> float:
    import cv2
    w = align(a, b, coarse)
    if w is None:
        return -1.0
    size = a.shape[0]
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    bw = cv2.warpAffine(b, w, (size, size), flags=flags)
    cover = cv2.warpAffine(np.ones_like(b), w, (size, size), flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP)
    k = p.window
    valid = cv2.erode((cover > 0.5).astype(np.uint8), np.ones((k + 4, k + 4), np.uint8)) > 0
    m = int(round(size * p.margin))
    if m:
        valid[:m] = valid[-m:] = False
        valid[:, :m] = valid[:, -m:] = False
    if valid.mean() < 0.3:
        return -1.0
    best = (-2.0, 0.0, 0)
    for sigma in SIGMAS:                     # which side is sharper, and by how much
        for side in ((0, 1) if sigma else (0,)):
            g = _global_ncc(_blur(a, sigma) if side == 0 else a, _blur(bw, sigma) if side == 1 else bw, valid)
            if g > best[0]:
                best = (g, sigma, side)
    _, sigma, side = best
    x = _blur(_blur(a, sigma) if side == 0 else a, p.base_sigma)
    y = _blur(_blur(bw, sigma) if side == 1 else bw, p.base_sigma)
    box = (k, k)
    mx, my = cv2.boxFilter(x, -1, box), cv2.boxFilter(y, -1, box)
    vx = np.clip(cv2.boxFilter(x * x, -1, box) - mx * mx, 0, None)
    vy = np.clip(cv2.boxFilter(y * y, -1, box) - my * my, 0, None)
    cxy = cv2.boxFilter(x * y, -1, box) - mx * my
    c = p.stabilizer
    ncc = (cxy + c) / (np.sqrt(vx * vy) + c)
    return float(np.quantile(ncc[valid], p.quantile))


def pair_score(a: np.ndarray, b: np.ndarray, p: VerifyParams = VerifyParams()) -> float:
    """How much B looks like a copy of A (see the module docstring); thumbnails from `thumbnail`."""
    if not p.mirror:
        score = _score_aligned(a, b, p)
    else:  # the orientation that matches better at quarter size is the one refined
        pa, pb = _pyramid(a), _pyramid(b)
        flipped = np.ascontiguousarray(b[:, ::-1])
        pf = _pyramid(flipped)
        whole = np.ones(pa[0].shape, bool)
        raw_b, raw_f = _global_ncc(pa[0], pb[0], whole), _global_ncc(pa[0], pf[0], whole)
        direct = _coarse(pa, pb)
        # a frontal face nearly matches its own mirror image, so only a near-perfect direct
        # match makes the mirrored one needless
        mirrored = _coarse(pa, pf) if direct[1] < 0.97 and raw_f >= raw_b - 0.1 else (None, -2.0)
        score = (_score_aligned(a, b, p, direct) if direct[1] >= mirrored[1]
                 else _score_aligned(a, flipped, p, mirrored))
    return score if math.isfinite(score) else -1.0


def score_pairs(thumbs: dict[int, np.ndarray | None], i: np.ndarray, j: np.ndarray,
                p: VerifyParams = VerifyParams(), workers: int = 2) -> np.ndarray:
    """Scores of the pairs (i[k], j[k]); -1 where either image is missing."""
    def one(k: int) -> float:
        a, b = thumbs.get(int(i[k])), thumbs.get(int(j[k]))
        if a is None or b is None:
            return -1.0
        return pair_score(a, b, p)
    if len(i) == 0:
        return np.zeros(0, np.float32)
    if workers <= 1 or len(i) < 16:
        return np.array([one(k) for k in range(len(i))], np.float32)
    import cv2
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)          # parallel over pairs, not inside each small call
    try:
        with ThreadPoolExecutor(workers) as pool:
            return np.array(list(pool.map(one, range(len(i)), chunksize=32)), np.float32)
    finally:
        cv2.setNumThreads(threads)
