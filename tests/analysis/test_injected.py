"""The redundancy study's sets: exact sizes, the injected rate, nesting, determinism, no leakage."""
from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from facesift.analysis.injected import CRAWL_EDITS, check_no_leak, crawl_copy, key_rng, plan_set, write_set

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "landmarks5" / "images"


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.8])
def test_sets_have_size_n_and_the_injected_rate(rate):
    pool = [f"face{i:03d}" for i in range(300)]
    members = plan_set(pool, 200, rate, seed=3)
    assert len(members) == 200 and len({m.key for m in members}) == 200
    copies = [m for m in members if m.edit != "orig"]
    originals = {m.source for m in members if m.edit == "orig"}
    assert len(copies) == round(rate * 200)
    assert len(originals) == 200 - len(copies)
    assert {m.source for m in copies} <= originals          # copies of the set's own originals only
    if copies:
        per = Counter(m.source for m in copies).values()
        assert max(per) - min(per) <= 1                     # dealt evenly
        assert {m.edit for m in copies} <= set(CRAWL_EDITS) and len({m.edit for m in copies}) == len(CRAWL_EDITS)


def test_more_redundant_sets_reuse_the_less_redundant_sets_originals_and_are_deterministic():
    pool = [f"k{i}" for i in range(120)]
    origs = {r: [m.source for m in plan_set(pool, 100, r, seed=1) if m.edit == "orig"] for r in (0.0, 0.5, 0.8)}
    assert set(origs[0.8]) <= set(origs[0.5]) <= set(origs[0.0])
    assert plan_set(pool, 100, 0.5, seed=1) == plan_set(list(reversed(pool)), 100, 0.5, seed=1)
    assert plan_set(pool, 100, 0.5, seed=1) != plan_set(pool, 100, 0.5, seed=2)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="unique faces"):
        plan_set([f"k{i}" for i in range(10)], 100, 0.5)
    with pytest.raises(ValueError, match="rate"):
        plan_set(["a", "b"], 2, 1.0)
    with pytest.raises(ValueError, match="unique"):
        plan_set(["a", "a"], 1, 0.0)


def test_every_edit_keeps_the_size_and_changes_the_pixels_but_not_the_face():
    image = Image.open(sorted(SAMPLE.glob("*.jpg"))[0]).convert("RGB")
    base = np.asarray(image, np.float32)
    for edit in CRAWL_EDITS:
        a = crawl_copy(image, edit, key_rng("x", edit))
        b = crawl_copy(image, edit, key_rng("x", edit))
        assert a.size == image.size and np.array_equal(np.asarray(a), np.asarray(b)), edit
        diff = np.abs(np.asarray(a, np.float32) - base).mean()
        assert 0.5 < diff < 60, (edit, diff)                # a near-duplicate, not the same bytes or another image


def test_written_sets_hold_exactly_the_plan_with_provenance(tmp_path):
    files = sorted(SAMPLE.glob("*.jpg"))[:20]
    paths = {f.stem: str(f) for f in files}
    members = plan_set(sorted(paths), 40, 0.5, seed=0)      # 20 originals + 20 copies
    write_set(members, paths, tmp_path / "a", "study-test")
    write_set(members, paths, tmp_path / "b", "study-test")
    seen = {}
    for tar in sorted((tmp_path / "a").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            seen[s["__key__"]] = (json.loads(s["json"]), s["jpg"])
            Image.open(io.BytesIO(s["jpg"])).verify()
    assert sorted(seen) == sorted(m.key for m in members)
    for m in members:
        meta, data = seen[m.key]
        assert meta["source"] == m.source and meta["edit"] == m.edit
        if m.edit == "orig":
            assert data == Path(paths[m.source]).read_bytes()
    # the same plan writes the same bytes
    assert [t.read_bytes() for t in sorted((tmp_path / "a").glob("*.tar"))] == \
           [t.read_bytes() for t in sorted((tmp_path / "b").glob("*.tar"))]


def test_a_held_out_face_in_the_pool_is_refused_by_path_and_by_bytes(tmp_path):
    files = sorted(SAMPLE.glob("*.jpg"))[:6]
    pool = {f.stem: str(f) for f in files[:4]}
    check_no_leak(pool, [str(f) for f in files[4:]])
    with pytest.raises(ValueError, match="in the pretraining pool"):
        check_no_leak(pool, [str(files[0])])
    twin = tmp_path / "renamed.jpg"
    shutil.copy(files[1], twin)
    with pytest.raises(ValueError, match="same bytes"):
        check_no_leak(pool, [str(twin)])


def test_written_sets_carry_the_sources_yaw_for_pose_balance(tmp_path):
    files = sorted(SAMPLE.glob("*.jpg"))[:6]
    paths = {f.stem: str(f) for f in files}
    yaws = {k: 10.0 * i - 20 for i, k in enumerate(sorted(paths)[:5])}    # the sixth has none
    members = plan_set(sorted(paths), 12, 0.5, seed=0)
    write_set(members, paths, tmp_path / "s", "study-test", yaws=yaws)
    for tar in sorted((tmp_path / "s").glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(s["json"])
            if meta["source"] in yaws:   # a copy keeps its original's head pose
                assert meta["yaw"] == pytest.approx(yaws[meta["source"]])
            else:
                assert "yaw" not in meta
