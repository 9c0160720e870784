"""faiss near-duplicate search equals NumPy brute force (embeddings and Hamming codes)."""
from __future__ import annotations

import numpy as np
import pytest

from facesift.analysis.config import SearchConfig
from facesift.analysis.hashes import hamming_matrix_reference
from facesift.analysis.neardup import brute_force_pairs, hamming_pairs, ivf_lists, near_duplicate_pairs


def planted(n: int, d: int, seed: int) -> np.ndarray:
    """Random unit vectors with planted near-duplicates: pairs, and one group of 60 (> k)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    src = rng.integers(100, n, 800)
    noise = rng.uniform(0.05, 0.6, (800, 1)).astype(np.float32)   # spans the threshold
    x[:800] = x[src] + noise * rng.standard_normal((800, d)).astype(np.float32) * np.sqrt(1 / d) * 3
    x[800:860] = x[99] + 0.02 * rng.standard_normal((60, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def as_set(i, j):
    return set(zip(i.tolist(), j.tolist()))


def test_embedding_pairs_equal_brute_force():
    x = planted(20_000, 64, seed=64)
    t = 0.9
    bi, bj, bs = brute_force_pairs(x, t)
    i, j, s, info = near_duplicate_pairs(x, t, SearchConfig(k=16))
    # the 61-member group saturates k=16 rows: they must have been completed by range_search
    assert info["saturated_rows"] >= 60 and info["completion"] == "range_search"
    ref = as_set(bi, bj)
    got = as_set(i, j)
    # float32 BLAS vs NumPy can differ in the last bits: ignore pairs within 1e-5 of t
    edge = {p for p, v in zip(zip(bi.tolist(), bj.tolist()), bs) if abs(v - t) < 1e-5}
    edge |= {p for p, v in zip(zip(i.tolist(), j.tolist()), s) if abs(v - t) < 1e-5}
    assert len(ref) > 2000
    assert got - edge == ref - edge
    lookup = dict(zip(zip(bi.tolist(), bj.tolist()), bs))
    assert max(abs(lookup[p] - v) for p, v in zip(zip(i.tolist(), j.tolist()), s) if p in lookup) < 1e-4


def test_approximate_index_reports_recall():
    x = planted(6_000, 64, seed=3)
    bi, bj, _ = brute_force_pairs(x, 0.9)
    i, j, _, info = near_duplicate_pairs(x, 0.9, SearchConfig(k=16, index="ivf", recall_sample=500))
    assert info["index"] == "ivf"
    assert 0.0 < info["recall"]["recall@16"] <= 1.0
    found = len(as_set(i, j) & as_set(bi, bj)) / len(bi)
    assert found > 0.9
    assert as_set(i, j) <= as_set(bi, bj)    # approximate search never invents pairs


def test_ivf_tunes_nprobe_to_the_target_recall_and_rescores_exactly():
    x = planted(20_000, 64, seed=5)
    i, j, s, info = near_duplicate_pairs(x, 0.9, SearchConfig(k=16, index="ivf", recall_sample=500))
    assert info["storage"] == "fp16" and info["nlist"] == ivf_lists(20_000)
    pilot = info["pilot_recall"]
    # the smallest nprobe tried (4, 8, ...) that reaches 0.99 on the close neighbours; unclustered
    # random vectors need more than the first
    assert info["nprobe"] == max(pilot) and pilot[info["nprobe"]] >= 0.99
    assert len(pilot) > 1 and all(r < 0.99 for p, r in pilot.items() if p < info["nprobe"])
    # float16 codes find the neighbours, the similarities are exact float32 ones
    assert np.abs(s - np.einsum("ij,ij->i", x[i], x[j])).max() < 1e-5
    bi, bj, _ = brute_force_pairs(x, 0.9)
    assert len(as_set(i, j) & as_set(bi, bj)) / len(bi) >= 0.99 and as_set(i, j) <= as_set(bi, bj)
    # the graph's own recall at the threshold, estimated on the 500 sampled rows (~60 pairs): noisy
    assert info["recall"]["recall_at_threshold"] >= 0.95 and info["recall"]["pairs_in_sample"] > 20
    # an explicit nprobe wins (no pilot), and a lower target ends the pilot sooner
    _, _, _, fixed = near_duplicate_pairs(x, 0.9, SearchConfig(k=16, index="ivf", nprobe=2, recall_sample=500))
    assert fixed["nprobe"] == 2 and "pilot_recall" not in fixed
    _, _, _, low = near_duplicate_pairs(x, 0.9, SearchConfig(k=16, index="ivf", target_recall=0.5,
                                                             recall_sample=500))
    assert low["nprobe"] < info["nprobe"]


def _codes_with_planted(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    bits = np.unpackbits(codes[500:1000], axis=1)
    for r in range(500):                      # copies at every distance 0..12 of another code
        flip = rng.permutation(64)[: r % 13]
        bits[r, flip] ^= 1
    codes[:500] = np.packbits(bits, axis=1)
    return codes


@pytest.fixture(scope="module")
def codes_and_reference():
    """20k codes and every brute-force pair (i < j) with its distance, up to distance 9."""
    codes = _codes_with_planted(20_000, seed=1)
    words = codes.view(">u8")[:, 0]                # one 64-bit word per code
    ref = {}
    for a in range(0, len(codes), 2000):
        dm = np.bitwise_count(words[a:a + 2000, None] ^ words[None, :])
        r, c = np.nonzero(dm <= 9)
        for p, q, dist in zip((r + a).tolist(), c.tolist(), dm[r, c].tolist()):
            if q > p:
                ref[(p, q)] = dist
    # the packed-bit layout agrees with a bit-by-bit reference
    assert (hamming_matrix_reference(codes[:50], codes[:300]) ==
            np.bitwise_count(words[:50, None] ^ words[None, :300])).all()
    return codes, ref


@pytest.mark.parametrize("method,radius", [("flat", 8), ("multihash", 4)])
def test_hamming_pairs_equal_brute_force(codes_and_reference, method, radius):
    codes, ref = codes_and_reference
    i, j, dist = hamming_pairs(codes, radius, method=method)
    assert as_set(i, j) == {p for p, d in ref.items() if d <= radius}
    assert all(ref[p] == d for p, d in zip(zip(i.tolist(), j.tolist()), dist.tolist()))
    # the strict-< edge of faiss: distance exactly == radius is in, radius + 1 is out
    assert (dist == radius).any() and dist.max() == radius
    i1, j1, d1 = hamming_pairs(codes, radius + 1, method=method)
    assert as_set(i1, j1) == {p for p, d in ref.items() if d <= radius + 1}
    assert (d1 == radius + 1).sum() == len(i1) - len(i) > 0
