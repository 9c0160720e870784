"""Loaders: landmarks5 lists, iBUG .pts, manifests, pairs, the Yale manifest from file names."""
from __future__ import annotations

import numpy as np
import pytest

from facesift.finetune import datasets as ds


def test_landmarks5_list(shared_data):
    recs = ds.read_landmarks5(shared_data / "landmarks5")
    assert len(recs) == 10000
    r = recs[0]
    assert r["target"].shape == (5, 2)
    # first line: lfw_5590/Aaron_Eckhart_0001.jpg 34.32 47.28 40.4 34.0 45.04 34.8 36.24 46.0 50.8 52.08
    np.testing.assert_allclose(r["target"][0], [34.32, 34.8], atol=1e-4)
    np.testing.assert_allclose(r["target"][4], [45.04, 52.08], atol=1e-4)
    assert r["key"] == "lfw_5590-Aaron_Eckhart_0001"
    assert len({x["key"] for x in recs}) == len(recs)


def test_landmarks5_bad_lines(tmp_path):
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "a.jpg")
    bad = tmp_path / "bad.txt"
    bad.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        ds.read_landmarks5(bad)
    bad.write_text("a.jpg 1 2 3 4 x 6 7 8 9 10\n")
    with pytest.raises(ValueError, match="non-numeric"):
        ds.read_landmarks5(bad)
    bad.write_text("a.jpg 1 2 3 4 5 6 7 8 9 10\nmissing.jpg 1 2 3 4 5 6 7 8 9 10\n")
    with pytest.raises(ValueError, match="bad.txt:2: image .*missing.jpg does not exist"):
        ds.read_landmarks5(bad)


def test_pts_is_one_based(shared_data, tmp_path):
    pts = ds.read_pts(shared_data / "photos" / "einstein.pts")
    assert pts.shape == (68, 2)
    np.testing.assert_allclose(pts[0], [357.417253 - 1, 308.455774 - 1], atol=1e-4)
    # a folder: only images with a .pts beside them, each with a crop box around the face
    recs = ds.read_pts_dir(shared_data / "photos")
    assert sorted(r["key"] for r in recs) == ["breakingbad", "einstein", "takeo"]
    for r in recs:
        cx, cy, side = r["box"]
        lo, hi = r["target"].min(0), r["target"].max(0)
        assert lo[0] < cx < hi[0] and side > (hi - lo).max()
    (tmp_path / "x.pts").write_text("version: 1\nn_points: 3\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="n_points 3"):
        ds.read_pts(tmp_path / "x.pts")


def test_yale_manifest(shared_data, tmp_path):
    rows = ds.yale_manifest(shared_data / "yalefaces", "identity")
    assert len(rows) == 164
    assert len({r["label"] for r in rows}) == 15
    expr = ds.yale_manifest(shared_data / "yalefaces", "expression")
    assert {r["label"] for r in expr} == set(ds.YALE_CONDITIONS)
    assert len({r["label"] for r in expr}) == 11
    # dots in names: 'subject01.glasses.gif' -> identity subject01, condition glasses
    byname = {r["path"]: r["label"] for r in expr}
    assert byname["subject01.glasses.gif"] == "glasses"
    assert "subject01.centerlight.gif" not in byname          # missing from the database
    path = ds.write_manifest(rows, tmp_path / "yale.csv")
    recs, classes = ds.read_classification(path, root=shared_data / "yalefaces")
    assert classes[0] == "subject01" and len(classes) == 15
    assert recs[0]["path"].endswith("subject01.glasses.gif") and recs[0]["target"] == 0
    assert ds.load_image(recs[0]["path"]).mode == "RGB"      # grayscale GIF read as RGB


def test_regression_manifest_and_pairs(tmp_path):
    (tmp_path / "reg.csv").write_text("path,valence,arousal\na.jpg,0.5,-0.1\nb.jpg,0.2,0.3\n")
    recs, names = ds.read_regression(tmp_path / "reg.csv")
    assert names == ["valence", "arousal"]
    np.testing.assert_allclose(recs[1]["target"], [0.2, 0.3])
    (tmp_path / "bad.csv").write_text("path,valence\na.jpg,high\n")
    with pytest.raises(ValueError, match="non-numeric"):
        ds.read_regression(tmp_path / "bad.csv")
    (tmp_path / "pairs.txt").write_text("a.jpg b.jpg 1\na.jpg c.jpg 0\n")
    pairs = ds.read_pairs(tmp_path / "pairs.txt")
    assert pairs[0] == (str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), 1)
    records = [{"path": f"{i}.jpg", "target": i % 3} for i in range(9)]
    made = ds.make_pairs(records)
    assert sum(s for *_, s in made) == 9          # 3 identities x C(3, 2) genuine pairs
    assert all((int(a[0]) % 3 == int(b[0]) % 3) == bool(s) for a, b, s in made)
