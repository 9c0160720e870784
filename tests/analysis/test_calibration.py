"""The self-calibrated threshold and the pair verification, piece by piece: the estimators on
mixtures with known answers, the verification score on real frames and copies, the copies'
effective resolution, and the command's paths (explicit values win, bad values exit 2 before
any work, shards that cannot be read back)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from facesift.analysis import calibrate as cal
from facesift.analysis import verify_pairs as vp
from tests.analysis.test_embed import _cli
from tests.analysis.test_redundancy import _burst_shards


def test_pair_estimator_on_a_known_mixture():
    rng = np.random.default_rng(0)
    copies = 1 - rng.beta(1.5, 30, 600)                    # copy similarities crowd near 1
    true_pairs = 1 - rng.beta(1.5, 30, 800)                # the dataset's duplicates: the same law
    negatives = rng.normal(0.55, 0.1, 20000)               # close pairs that are not duplicates
    pairs = np.concatenate([true_pairs, negatives])
    sel = cal.select_threshold(copies, pairs, 0.99)
    t = sel["threshold"]
    true_p = (true_pairs >= t).sum() / max(1, (pairs >= t).sum())
    assert abs(sel["estimated_duplicate_pairs"] - 800) < 80, sel["estimated_duplicate_pairs"]
    assert true_p >= 0.98 and abs(sel["expected_precision"] - true_p) < 0.02, (true_p, sel)
    assert abs(sel["expected_recall"] - (true_pairs >= t).mean()) < 0.05
    # no duplicates at all: no threshold with false pairs above it is chosen
    none = cal.select_threshold(copies, negatives, 0.99)
    assert (negatives >= none["threshold"]).sum() == 0 and none["estimated_duplicate_pairs"] < 5
    # integer Hamming distances (score = -distance) snap to whole radii
    far = rng.integers(10, 30, 5000)
    ham = cal.select_threshold(-rng.integers(0, 6, 400), -np.concatenate([rng.integers(0, 6, 300), far]), 0.99,
                               step=1.0)
    radius = -ham["threshold"]
    # a few hundred copies measure precision to a few percent, so 0.99 is met conservatively
    assert radius == int(radius) and 2 <= radius < far.min() and ham["expected_precision"] >= 0.99


def test_verification_threshold_keeps_copies_and_targets_precision():
    rng = np.random.default_rng(1)
    copies = np.clip(1 - rng.exponential(0.01, 600), -1, 1)
    true = np.clip(1 - rng.exponential(0.012, 500), -1, 1)
    easy_negatives = np.clip(rng.normal(0.1, 0.15, 1500), -1, 1)
    sel = cal.verify_threshold(copies, np.concatenate([true, easy_negatives]), 0.99, 0.99)
    assert sel["how"] == "recall" and sel["expected_precision"] >= 0.99
    assert (true >= sel["threshold"]).mean() >= 0.95 and (easy_negatives >= sel["threshold"]).sum() == 0
    # non-copies with a hard edge (uniform up to 0.6): the deliberately heavy tail cannot certify
    # 0.99, so the threshold rises — but never past the recall floor
    edge = cal.verify_threshold(copies, np.concatenate([true, rng.uniform(-0.5, 0.6, 1500)]), 0.99, 0.99)
    assert edge["expected_recall"] >= 0.945 and edge["threshold"] >= sel["threshold"]
    # non-copies scoring like copies (frames of one session): precision first, down to the recall floor
    hard = rng.uniform(0.6, 0.975, 1500)
    sel2 = cal.verify_threshold(copies, np.concatenate([true, hard]), 0.99, 0.99, min_recall=0.95)
    assert sel2["how"] == "recall-floor" and sel2["threshold"] > sel["threshold"]
    assert abs(sel2["expected_recall"] - 0.95) < 0.01
    # a few copies verification cannot confirm do not drag the threshold into the non-copies
    broken = np.concatenate([copies, -np.ones(30)])
    assert cal.verify_threshold(broken, np.concatenate([true, easy_negatives]), 0.99, 0.99)["threshold"] > 0.9


def test_verification_score_tells_copies_from_other_frames(shared_data):
    yale = shared_data / "yalefaces"
    frame = Image.open(yale / "subject02.normal.gif").convert("RGB")
    other = Image.open(yale / "subject02.sleepy.gif").convert("RGB")   # eyes closed, same session
    lit = Image.open(yale / "subject02.leftlight.gif").convert("RGB")
    w, h = frame.size
    copies = {"jpeg": cal._jpeg(frame, 15), "rescale": frame.resize((w // 2, h // 2)),
              "crop": frame.crop((10, 8, w - 14, h - 10)), "relight": ImageEnhance.Brightness(frame).enhance(1.3),
              "rotate": frame.rotate(5, resample=Image.Resampling.BILINEAR), "mirror": ImageOps.mirror(frame)}
    p = vp.VerifyParams()
    a = vp.thumbnail(frame, p.size)
    scores = {k: vp.pair_score(a, vp.thumbnail(c, p.size), p) for k, c in copies.items()}
    hard = vp.pair_score(a, vp.thumbnail(other, p.size), p)
    light = vp.pair_score(a, vp.thumbnail(lit, p.size), p)
    # measured: copies 0.976 (brightness x1.3 clips) .. 1.0, the blink 0.958, other light -1 (no warp)
    assert min(scores.values()) > max(hard, light) + 0.01, (scores, hard, light)
    assert light < 0.6                                      # other light: far from any copy
    assert vp.pair_score(a, vp.thumbnail(copies["mirror"], p.size), vp.VerifyParams(mirror=False)) < hard
    # one call for many pairs, threads or not, gives the same scores; a missing image is -1
    thumbs = {0: a, 1: vp.thumbnail(copies["jpeg"], p.size), 2: vp.thumbnail(other, p.size), 3: None}
    i, j = np.array([0, 0, 0] * 8), np.array([1, 2, 3] * 8)
    assert np.array_equal(vp.score_pairs(thumbs, i, j, p, workers=1), vp.score_pairs(thumbs, i, j, p, workers=2))
    assert vp.score_pairs(thumbs, i, j, p)[2] == -1.0


def test_copies_are_edited_at_the_effective_resolution(shared_data):
    crop = Image.open(sorted((shared_data / "landmarks5" / "lfw_5590").glob("*.jpg"))[0]).convert("RGB")
    upscaled = crop.resize((256, 256), Image.Resampling.BICUBIC)       # what curate stores for an 80 px photo
    assert 70 <= cal.effective_side(upscaled) <= 100
    sharp = Image.open(shared_data / "photos" / "astronaut.png").convert("RGB").resize((256, 256))
    assert cal.effective_side(sharp) >= 190
    copies = cal.make_copies({0: upscaled, 1: sharp, 2: None}, cal.FAMILIES, 6, seed=0)
    assert len(copies.rows) == 12 and sorted(set(copies.family)) == sorted(cal.FAMILIES)
    assert all(c.size == (256, 256) for c in copies.copies)           # stored as the dataset stores them
    again = cal.make_copies({0: upscaled, 1: sharp}, cal.FAMILIES, 6, seed=0)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(copies.copies, again.copies))


@pytest.fixture(scope="module")
def burst(tmp_path_factory):
    """60 crops, 10 of them re-uploaded 4 times; embedded once."""
    root = tmp_path_factory.mktemp("burst")
    shards = _burst_shards(root / "shards")
    assert _cli("embed", "--shards", str(shards), "--out", str(root / "emb"), "--no-progress") == 0
    return root


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_calibrated_by_default_and_explicit_values_win(burst, tmp_path, capsys):
    emb = str(burst / "emb")
    assert _cli("redundancy", "--emb", emb, "--out", str(tmp_path / "auto"), "--no-progress") == 0
    s = _summary(tmp_path / "auto")
    assert s["threshold_source"] == "calibrated" and s["duplicates"] == 40 and s["groups"] == 10
    cal_ = s["calibration"]
    assert cal_["sample"] == 100 and cal_["copies"] == 200 and cal_["emb"]["used"] == s["threshold"]
    assert s["verification"]["enabled"] and s["verification"]["source"] == "calibrated"
    assert "threshold=" in capsys.readouterr().out

    assert _cli("redundancy", "--emb", emb, "--out", str(tmp_path / "given"), "--threshold", "0.93",
                "--target-precision", "0.95", "--calibration-sample", "40", "--no-progress") == 0
    g = _summary(tmp_path / "given")
    assert g["threshold"] == 0.93 and g["threshold_source"] == "given" and g["calibration"]["sample"] == 40
    assert g["calibration"]["emb"]["source"] == "given" and g["calibration"]["target_precision"] == 0.95

    assert _cli("redundancy", "--emb", emb, "--out", str(tmp_path / "ph"), "--by", "phash", "--no-progress") == 0
    h = _summary(tmp_path / "ph")
    assert h["hamming_source"] == "calibrated" and h["calibration"]["hamming"]["used"] == h["hamming"]
    assert 0 <= h["hamming"] <= 64 and h["duplicates"] == 40
    assert _cli("redundancy", "--emb", emb, "--out", str(tmp_path / "ph8"), "--by", "phash", "--hamming", "8",
                "--threshold", "0.9", "--no-verify", "--no-progress") == 0
    h8 = _summary(tmp_path / "ph8")
    assert h8["hamming"] == 8 and h8["calibration"]["skipped"] and not h8["verification"]["enabled"]


@pytest.mark.parametrize("bad", [["--target-precision", "1.5"], ["--threshold", "2"], ["--calibration-sample", "0"],
                                 ["--hamming", "65"], ["--set", "calibrate.families=[jpeg,sepia]"],
                                 ["--set", "verify.window=60"], ["--set", "verify.recall=0.2"],
                                 ["--set", "calibrate.families=[]"]])
def test_bad_values_exit_2_before_any_work(burst, tmp_path, bad, caplog):
    out = tmp_path / "out"
    assert _cli("redundancy", "--emb", str(burst / "emb"), "--out", str(out), "--no-progress", *bad) == 2
    assert not out.exists()
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_shards_gone(burst, tmp_path, caplog):
    emb = tmp_path / "emb"
    shutil.copytree(burst / "emb", emb)
    info = json.loads((emb / "info.json").read_text())
    info["shards"] = [str(tmp_path / "moved" / Path(u).name) for u in info["shards"]]
    (emb / "info.json").write_text(json.dumps(info))
    # the calibration needs the images: one line, exit 2, nothing written
    assert _cli("redundancy", "--emb", str(emb), "--out", str(tmp_path / "a"), "--no-progress") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "--threshold" in errors[0] and "--no-verify" in errors[0]
    assert not (tmp_path / "a" / "summary.json").exists()
    # every threshold given: only verification needed them, so it is skipped with a warning
    caplog.clear()
    assert _cli("redundancy", "--emb", str(emb), "--out", str(tmp_path / "b"), "--threshold", "0.9",
                "--no-progress") == 0
    s = _summary(tmp_path / "b")
    assert not s["verification"]["enabled"] and s["calibration"]["skipped"]
    assert any("not verified" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    page = (tmp_path / "b" / "report.html").read_text()
    assert "id='calibration'" in page and "no calibration" in page
