"""`facesift study redundancy`: refuses bad input before work, keeps test faces out, runs end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from facesift.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "landmarks5"


def _lists(tmp_path: Path, n_train: int, n_test: int) -> tuple[Path, Path]:
    lines = (SAMPLE / "train.txt").read_text().splitlines()
    absolute = [str(SAMPLE / l.split()[0]) + " " + " ".join(l.split()[1:]) for l in lines]
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n".join(absolute[:n_train]) + "\n")
    test.write_text("\n".join(absolute[n_train:n_train + n_test]) + "\n")
    return train, test


def _config(tmp_path: Path, **study) -> Path:
    body = {"size": 24, "rates": [0.0, 0.5], "dedup": False, "pretrain_config": str(ROOT / "configs" / "cpu-tiny.yaml"),
            "pretrain_epochs": 1,
            "pretrain_set": ["data.epoch_size=16", "data.batch_size=8", "data.workers=0", "crops.size_crops=[32,16]",
                             "model.nmb_prototypes=10", "checkpoint_every=1000"],
            "finetune_set": ["image_size=32", "search.steps=[3]", "search.min_steps=1", "search.steps_images=0",
                             "train.batch_size=8", "train.eval_batch_size=16", "train.workers=0", "train.cpu_amp=false",
                             "train.ckpt_every=0"],
            "fractions": [0.5], "seeds": 1, "ranks": 1, "threads": 1, **study}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"study": body}))
    return path


@pytest.mark.parametrize("override", ["rates=[0.5,0.0]", "size=5", "rates=[1.0]", "seeds=0", "nope=1"])
def test_bad_values_exit_2_before_any_work(tmp_path, override):
    train, test = _lists(tmp_path, 30, 8)
    work = tmp_path / "work"
    assert main(["study", "redundancy", "--work", str(work), "--data", str(train), "--test", str(test),
                 "--config", str(_config(tmp_path)), "--set", override]) == 2
    assert not work.exists()


def test_a_test_face_in_the_training_pool_exits_2(tmp_path):
    train, test = _lists(tmp_path, 30, 8)
    leaked = tmp_path / "leak.txt"
    first = train.read_text().splitlines()[0].split()
    copy = tmp_path / "renamed.jpg"
    shutil.copy(first[0], copy)
    leaked.write_text(test.read_text() + " ".join([str(copy), *first[1:]]) + "\n")
    assert main(["study", "redundancy", "--work", str(tmp_path / "work"), "--data", str(train), "--test",
                 str(leaked), "--config", str(_config(tmp_path))]) == 2
    assert not (tmp_path / "work" / "sets").exists()


@pytest.mark.slow   # ~1.5 min alone (two redundancy runs, three tiny pretrainings and fine-tunings): `make test-all`
def test_the_study_runs_end_to_end_and_resumes(tmp_path, capsys):
    train, test = _lists(tmp_path, 40, 12)
    work = tmp_path / "work"
    args = ["study", "redundancy", "--work", str(work), "--data", str(train), "--test", str(test),
            "--config", str(_config(tmp_path)), "--set", "scratch=true"]   # the optional reference row too
    assert main(args) == 0
    result = json.loads((work / "study.json").read_text())
    assert [s["rate"] for s in result["sets"]] == [0.0, 0.5]
    assert [s["size"] for s in result["sets"]] == [24, 24] and [s["unique_originals"] for s in result["sets"]] == [24, 12]
    for s in result["sets"]:
        assert 0 < s["unique_fraction"] <= 1 and s["effective_size"] <= 24
        cell = s["nme"]["0.5"]
        assert cell["seeds"] == 1 and cell["nme_mean"] > 0
        assert Path(s["backbone"]).exists()
    assert result["scratch"]["0.5"]["seeds"] == 1
    assert (work / "study.png").stat().st_size > 1000
    assert "Spearman at 50 %" in (work / "study.txt").read_text()
    # the injected copies do not make the cheap measure see *fewer* duplicates
    assert result["sets"][1]["unique_fraction"] <= result["sets"][0]["unique_fraction"]
    stamp = {p: p.stat().st_mtime_ns for p in work.rglob("backbone.pt")}
    capsys.readouterr()
    assert main(args) == 0                                    # resumes: nothing is trained again
    assert {p: p.stat().st_mtime_ns for p in work.rglob("backbone.pt")} == stamp
    assert "rate-50" in capsys.readouterr().out
