"""`facesift study pose`: uniform vs pose-balanced SwAV on one set, NME split by the test faces' yaw."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from facesift.cli import main
from facesift.shards.reader import iter_samples
from facesift.study_pose import PoseConfig, shared_config

from .test_study_redundancy import _config as study_config
from .test_study_redundancy import _lists


def _config(tmp_path: Path, **pose) -> Path:
    body = yaml.safe_load(study_config(tmp_path).read_text())["study"]
    for name in ("rates", "scratch"):
        body.pop(name, None)
    body.update({"fractions": [0.5], **pose})
    path = tmp_path / "pose.yaml"
    path.write_text(yaml.safe_dump({"study": body}))
    return path


def test_a_reused_study_decides_the_shared_fields(tmp_path):
    folder = tmp_path / "redundancy"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump({"study": {"size": 321, "pretrain_epochs": 9, "seed": 4,
                                                                 "finetune_set": ["train.batch_size=4"]}}))
    cfg = shared_config(PoseConfig(from_study=str(folder), size=50, fractions=[0.1]))
    assert (cfg.size, cfg.pretrain_epochs, cfg.seed, cfg.finetune_set) == (321, 9, 4, ["train.batch_size=4"])
    assert cfg.fractions == [0.1]   # the pose study's own field stays


def test_an_unfinished_study_folder_exits_2(tmp_path):
    folder = tmp_path / "redundancy"
    folder.mkdir()
    (folder / "study.yaml").write_text(yaml.safe_dump({"study": {"size": 24}}))
    train, test = _lists(tmp_path, 30, 8)
    assert main(["study", "pose", "--work", str(tmp_path / "work"), "--data", str(train), "--test", str(test),
                 "--config", str(_config(tmp_path)), "--set", f"from_study={folder}"]) == 2
    assert not (tmp_path / "work" / "balanced").exists()


@pytest.mark.slow   # ~1.5 min alone (two tiny pretrainings, four tiny fine-tunings): `make test-all`
def test_the_study_runs_end_to_end_with_yaw_in_the_set_and_resumes(tmp_path, capsys):
    train, test = _lists(tmp_path, 40, 12)
    work = tmp_path / "work"
    args = ["study", "pose", "--work", str(work), "--data", str(train), "--test", str(test),
            "--config", str(_config(tmp_path, seeds=2))]
    assert main(args) == 0
    samples = [s for p in sorted((work / "sets" / "rate-00" / "shards").glob("*.tar")) for s in iter_samples(str(p))]
    assert len(samples) == 24 and all(-90 <= json.loads(s["json"])["yaw"] <= 90 for s in samples)
    result = json.loads((work / "study.json").read_text())
    assert result["pose_table"]["counts"] and sum(result["test_faces"].values()) == 12
    for part in ("nme", "nme[frontal]", "nme[turned]"):
        if part != "nme" and not result["test_faces"].get(part[4:-1]):
            continue
        rows = {r["init"]: r for r in result["rows"][part]}
        assert set(rows) == {"uniform", "pose-balanced"} and all(r["seeds"] == 2 for r in rows.values())
    assert "pose-balanced" in (work / "study.txt").read_text()
    stamp = {p: p.stat().st_mtime_ns for p in work.rglob("backbone.pt")}
    assert len(stamp) == 2
    capsys.readouterr()
    assert main(args) == 0                                    # resumes: nothing is trained again
    assert {p: p.stat().st_mtime_ns for p in work.rglob("backbone.pt")} == stamp
