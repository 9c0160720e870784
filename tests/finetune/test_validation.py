"""Bad labels, values and result files are refused at the door, with where and why."""
from __future__ import annotations

import json

import numpy as np
import pytest

from facesift.cli import main
from facesift.finetune import curve
from facesift.finetune.datasets import read_landmarks5, read_pts_dir, read_regression

from .conftest import SAMPLE_LANDMARKS


def _lines(tiny_landmarks):
    return tiny_landmarks.read_text().splitlines()


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_landmarks_are_refused_with_file_and_line(tmp_path, tiny_landmarks, bad):
    lines = _lines(tiny_landmarks)
    parts = lines[3].split()
    parts[2] = bad
    lines[3] = " ".join(parts)
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:4: landmark coordinates must be finite"):
        read_landmarks5(path)


def test_points_far_outside_the_image_are_refused(tmp_path, tiny_landmarks):
    lines = _lines(tiny_landmarks)
    parts = lines[0].split()
    parts[1] = "5000"   # x of the first point, on a crop a few hundred pixels wide
    lines[0] = " ".join(parts)
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:1: point 0 at \(5000, .*\) lies outside"):
        read_landmarks5(path)


def test_points_slightly_outside_the_frame_are_kept(tmp_path, tiny_landmarks):
    lines = _lines(tiny_landmarks)
    parts = lines[0].split()
    parts[1] = "-3"     # an occluded point just past the border is a real label
    lines[0] = " ".join(parts)
    path = tmp_path / "edge.txt"
    path.write_text("\n".join(lines) + "\n")
    assert read_landmarks5(path)[0]["target"][0, 0] == -3


def test_pts_with_nan_is_refused(tmp_path):
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "a.jpg")
    (tmp_path / "a.pts").write_text("version: 1\nn_points: 2\n{\n10 10\nnan 20\n}\n")
    with pytest.raises(ValueError, match="a.pts: landmark coordinates must be finite"):
        read_pts_dir(tmp_path)


def test_nan_regression_target_is_refused(tmp_path):
    (tmp_path / "r.csv").write_text("path,y\na.jpg,0.5\nb.jpg,nan\n")
    with pytest.raises(ValueError, match=r"r.csv:3: targets must be finite"):
        read_regression(tmp_path / "r.csv")


def test_cli_exits_2_on_a_nan_label_and_writes_nothing(tmp_path, tiny_landmarks, capsys):
    lines = _lines(tiny_landmarks)
    lines[5] = lines[5].rsplit(" ", 1)[0] + " nan"
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "landmarks", "--data", str(path), "--out", str(out), "--seeds", "1",
                 "--fractions", "1", "--image-size", "32", "--set", "search.steps=[2]"]) == 2
    assert f"{path}:6" in capsys.readouterr().err
    assert not list(out.glob("results/*.json"))


@pytest.mark.parametrize("override", ["train.batch_size=0", "seeds=0", "search.steps=1.5", "image_size=0",
                                      "fractions=0", "train.warmup=2"])
def test_out_of_range_options_exit_2_before_any_work(tmp_path, tiny_landmarks, override, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--task", "landmarks", "--data", str(tiny_landmarks), "--out", str(out),
                 "--set", override]) == 2
    assert override.split("=")[0].split(".")[-1] in capsys.readouterr().err
    assert not out.exists()


def test_out_pointing_at_a_file_exits_2(tmp_path, tiny_landmarks, capsys):
    target = tmp_path / "a-file"
    target.write_text("x")
    assert main(["finetune", "--task", "landmarks", "--data", str(tiny_landmarks), "--out", str(target)]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_second_finetune_on_the_same_out_exits_2(tmp_path, tiny_landmarks, capsys):
    from facesift.common.lock import output_lock
    out = tmp_path / "ft"
    with output_lock(out):
        assert main(["finetune", "--task", "landmarks", "--data", str(tiny_landmarks), "--out", str(out),
                     "--seeds", "1", "--fractions", "1"]) == 2
    assert "in use by another run: pid" in capsys.readouterr().err
    assert not (out / "results").exists()


def _result(folder, name, **over):
    r = {"key": name, "task": "landmarks", "dataset": "d", "init": "scratch", "fraction": 1.0, "seed": 0,
         "adapt": "full", "distill": 0, "primary_metric": "nme", "lower_is_better": True,
         "metrics": {"nme": 0.1}}
    r.update(over)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(r))


def test_curve_skips_and_names_result_files_it_cannot_use(tmp_path, capsys):
    res = tmp_path / "results"
    for seed, f in enumerate((1.0, 0.5, 0.1)):
        _result(res, f"good{seed}", fraction=f, metrics={"nme": 0.1 / f})
    _result(res, "nan", fraction=0.5, metrics={"nme": float("nan")})
    _result(res, "nofrac", fraction=None)
    _result(res, "zero", fraction=0)
    (res / "junk.json").write_text("{not json")
    (res / "list.json").write_text("[1, 2]")
    assert main(["curve", str(res)]) == 1      # a table from the good ones; the skips make it exit 1
    captured = capsys.readouterr()
    assert "skipped=5" in captured.out and "nan.json: skipped, headline metric 'nme' is nan" in captured.err
    assert "Traceback" not in captured.err
    skipped: list[str] = []
    assert len(curve.load_results(res, skipped)) == 3
    assert sorted(s.split(":")[0].rsplit("/", 1)[1] for s in skipped) == [
        "junk.json", "list.json", "nan.json", "nofrac.json", "zero.json"]


def test_a_run_whose_headline_metric_is_nan_is_failed_not_recorded(tmp_path, tiny_landmarks, monkeypatch):
    from facesift.finetune import grid, trainer
    from .conftest import tiny_cfg
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: {"nme": float("nan"), "nme_diag": float("nan")})
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0])
    assert grid.run_grid(cfg)["failed"] == 1
    assert not list((tmp_path / "ft" / "results").glob("*.json"))


def test_sample_list_still_loads():
    records = read_landmarks5(SAMPLE_LANDMARKS / "train.txt")
    assert records and np.isfinite(records[0]["target"]).all()
