"""Fractions nest and are deterministic; the validation split comes from the training fraction."""
from __future__ import annotations

import random

from facesift.finetune.fractions import fraction_subset, keyed_subset, validation_split


def _records(n=2000):
    return [{"key": f"img{i:05d}", "path": f"{i}.jpg", "target": i} for i in range(n)]


def test_fractions_nested_and_deterministic():
    recs = _records()
    for seed in range(3):
        full = {r["key"] for r in fraction_subset(recs, 1.0, seed)}
        ten = {r["key"] for r in fraction_subset(recs, 0.1, seed)}
        two = {r["key"] for r in fraction_subset(recs, 0.02, seed)}
        assert two < ten < full and len(full) == 2000
        assert 150 < len(ten) < 250 and 20 < len(two) < 65
        shuffled = recs[:]
        random.Random(seed).shuffle(shuffled)                  # order never matters
        assert {r["key"] for r in fraction_subset(shuffled, 0.1, seed)} == ten
        assert {r["key"] for r in fraction_subset(recs[:1000], 0.1, seed)} == {k for k in ten if int(k[3:]) < 1000}
    # different seeds draw different subsets
    assert {r["key"] for r in fraction_subset(recs, 0.1, 0)} != {r["key"] for r in fraction_subset(recs, 0.1, 1)}


def test_validation_split():
    recs = fraction_subset(_records(), 0.1, 0)
    fit, val = validation_split(recs, 0.2, seed=0, minimum=8)
    assert not {r["key"] for r in fit} & {r["key"] for r in val}
    assert len(fit) + len(val) == len(recs) and len(val) >= 8
    assert validation_split(recs, 0.2, seed=0, minimum=8) == (fit, val)
    fit2, val2 = validation_split(recs[:3], 0.2, seed=0, minimum=8)    # never empties the fit side
    assert len(fit2) == 1 and len(val2) == 2


def test_keyed_subset(tmp_path):
    recs = _records(10)
    assert [r["key"] for r in keyed_subset(recs, {"img00003", "img00007"})] == ["img00003", "img00007"]
