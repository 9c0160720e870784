"""`shards sample N`: a seeded, uniform, streaming sample drawn as a grid."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from facesift.shards.contact_sheet import Reservoir, contact_sheet, render_sheet, sample_images
from tests.shards.fake_shards import sample, shards_cli, write_shard


def _colour(i):
    return (40 * (i % 6) + 20, 37 * (i // 6 % 6) + 20, 200)


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """30 solid-colour samples in 3 shards: every key's colour is known."""
    d = tmp_path_factory.mktemp("sheet") / "shards"
    d.mkdir()
    colours, n = {}, 0
    for s in range(3):
        items = []
        for i in range(10):
            key = f"c{n:02d}_0"
            colours[key] = _colour(n)
            items.append(sample(key, color=colours[key], size=48))
            n += 1
        write_shard(d / f"faces-{s:06d}.tar", items)
    return d, colours


def test_reservoir_is_uniform():
    n, k, trials = 40, 5, 3000
    hits = Counter()
    for seed in range(trials):
        reservoir, slots = Reservoir(k, random.Random(seed)), [None] * k
        for position in range(n):
            slot = reservoir.slot(position)
            if slot is not None:
                slots[slot] = position
        assert len(set(slots)) == k
        hits.update(slots)
    expected = trials * k / n                                         # 375 per position
    assert all(0.8 * expected < hits[p] < 1.2 * expected for p in range(n)), hits
    assert hits[0] + hits[1] < 2.4 * expected and hits[n - 1] > 0.8 * expected  # no head/tail bias


def test_seeded_and_streaming(coloured):
    d, colours = coloured
    a = sample_images(d, 7, seed=3, progress=False)
    b = sample_images(d, 7, seed=3, progress=False)
    c = sample_images(d, 7, seed=4, progress=False)
    assert [k for k, _ in a] == [k for k, _ in b] and len({k for k, _ in a}) == 7
    assert [k for k, _ in a] != [k for k, _ in c]
    assert [k for k, _ in a] == sorted(k for k, _ in a)              # shown in index order
    assert all(k in colours for k, _ in a)
    everything = sample_images(d, 100, seed=0, progress=False)       # fewer samples than asked
    assert [k for k, _ in everything] == sorted(colours)


def test_sheet_layout_shows_the_sampled_crops(coloured, tmp_path):
    d, colours = coloured
    out = tmp_path / "sheet.png"
    keys = contact_sheet(d, 9, out, seed=1, cell=40, cols=3, captions=False, progress=False)
    sheet = np.asarray(Image.open(out).convert("RGB")).astype(int)
    gap = 2
    assert sheet.shape[:2] == (3 * (40 + gap) + gap, 3 * (40 + gap) + gap)
    for i, key in enumerate(keys):
        y = gap + (i // 3) * (40 + gap) + 20
        x = gap + (i % 3) * (40 + gap) + 20
        assert np.abs(sheet[y, x] - np.array(colours[key])).max() < 12, (key, sheet[y, x])


def test_bad_image_is_drawn_not_fatal_and_cli(tmp_path, artifacts_dir, shared_data):
    d = tmp_path / "s"
    d.mkdir()
    broken = sample("bad_0")
    broken["jpg"] = b"not a jpeg"
    write_shard(d / "faces-000000.tar", [broken, sample("ok_0", color=(0, 255, 0))])
    sheet = render_sheet(sample_images(d, 2, progress=False), cell=32, cols=2, captions=True)
    pixels = np.asarray(sheet)
    assert tuple(pixels[2 + 16, 2 + 16]) == (160, 20, 20)             # bad_0: red cell

    # real faces (landmark crops) for people to look at: test-artifacts/contact_sheet.png
    crops = sorted((shared_data / "landmarks5" / "lfw_5590").glob("*.jpg"))[:60]
    faces = tmp_path / "faces"
    faces.mkdir()
    write_shard(faces / "faces-000000.tar",
                [{"__key__": f"lfw{i:03d}_0", "jpg": p.read_bytes(), "json": b"{}"} for i, p in enumerate(crops)])
    out = artifacts_dir / "contact_sheet.png"
    assert shards_cli(["shards", "sample", "16", str(faces / "faces-000000.tar"), "--out", str(out),
                       "--seed", "2", "--cell", "80"]) == 0
    with Image.open(out) as im:
        assert im.size == (4 * 82 + 2, 4 * (82 + 10) + 2)   # 10 px caption strips
