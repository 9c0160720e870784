"""`facesift study selection`: each method labels as many faces as random, chosen its own way."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from facesift.cli import main
from facesift.finetune.datasets import read_landmarks
from facesift.analysis.selection import split_table
from facesift.study_selection import select as _select

from .test_study_redundancy import ROOT, _lists

TINY_FT = ["image_size=32", "search.steps=[3]", "search.min_steps=1", "search.steps_images=0", "train.batch_size=8",
           "train.eval_batch_size=16", "train.workers=0", "train.cpu_amp=false", "train.ckpt_every=0"]


def select(method, keys, n, seed, keep, table):
    return _select(method, keys, n, seed, keep, *split_table(table))


def _table() -> dict[str, tuple[int, float]]:
    # 3 clusters of 4; in each, the member named *-0 is the one nearest the centroid
    return {f"c{c}-{i}": (c, 0.9 - 0.1 * i) for c in range(3) for i in range(4)}


def test_cluster_methods_visit_every_cluster_and_typical_takes_the_centroids_first():
    table, keys = _table(), sorted(_table())
    for seed in range(3):
        for method in ("cluster-balanced", "cluster-typical"):
            chosen = select(method, keys, 3, seed, set(keys), table)
            assert len(chosen) == 3 and {table[k][0] for k in chosen} == {0, 1, 2}
        assert sorted(select("cluster-typical", keys, 3, seed, set(keys), table)) == ["c0-0", "c1-0", "c2-0"]
        six = select("cluster-typical", keys, 6, seed, set(keys), table)
        assert sorted(six) == ["c0-0", "c0-1", "c1-0", "c1-1", "c2-0", "c2-1"]
    # the hash order within a cluster moves with the seed; the typical order does not
    balanced = {tuple(sorted(select("cluster-balanced", keys, 3, s, set(keys), table))) for s in range(8)}
    assert len(balanced) > 1


def test_random_dedup_draws_kept_faces_only_until_they_run_out():
    table, keys = _table(), sorted(_table())
    keep = set(keys) - {"c0-1", "c1-2"}
    for seed in range(4):
        assert not set(select("random-dedup", keys, 10, seed, keep, table)) & {"c0-1", "c1-2"}
    assert len(select("random-dedup", keys, 12, 0, keep, table)) == 12


def _config(tmp_path: Path, **study) -> Path:
    body = {"fractions": [0.5, 0.25], "seeds": 2, "ranks": 1, "threads": 1, "finetune_set": TINY_FT, **study}
    path = tmp_path / "selection.yaml"
    path.write_text(yaml.safe_dump({"study": body}))
    return path


@pytest.mark.parametrize("override", ["methods=[random,best]", "methods=[random,random]", "fractions=[1.0]",
                                      "init=missing.pt", "seeds=0"])
def test_bad_values_exit_2_before_any_work(tmp_path, override):
    train, test = _lists(tmp_path, 30, 8)
    work = tmp_path / "work"
    assert main(["study", "selection", "--work", str(work), "--data", str(train), "--test", str(test),
                 "--config", str(_config(tmp_path)), "--set", override]) == 2
    assert not work.exists()


@pytest.mark.slow   # ~1 min alone (one redundancy run, 12 tiny fine-tunings): `make test-all`
def test_the_study_runs_end_to_end_with_equal_label_counts_and_resumes(tmp_path, capsys):
    train, test = _lists(tmp_path, 40, 12)
    work = tmp_path / "work"
    args = ["study", "selection", "--work", str(work), "--data", str(train), "--test", str(test),
            "--config", str(_config(tmp_path))]
    assert main(args) == 0
    result = json.loads((work / "study.json").read_text())
    assert list(result["methods"]) == ["random", "random-dedup", "cluster-balanced", "cluster-typical"]
    train_keys = {r["key"] for r in read_landmarks(train)}
    for method in ("cluster-balanced", "cluster-typical"):
        for seed in range(2):
            for f in (0.5, 0.25):
                keys = (work / "keys" / method / f"seed{seed}-{f:g}.txt").read_text().split()
                assert len(keys) == result["labels"][method][f"{f:g}/{seed}"] > 0
                assert set(keys) <= train_keys and len(set(keys)) == len(keys)   # no held-out face labelled
        for f in ("0.5", "0.25"):
            cell = result["methods"][method][f]
            assert cell["seeds"] == 2 and cell["nme_mean"] > 0
    runs = [json.loads(p.read_text()) for p in (work / "finetune" / "cluster-typical" / "results").glob("*.json")]
    assert sorted(r["sizes"]["train"] for r in runs) == sorted(
        result["labels"]["cluster-typical"][f"{r['fraction']:g}/{r['seed']}"] for r in runs)
    assert set(result["verdict"]) == {"0.5", "0.25"}
    assert "best" in (work / "study.txt").read_text()
    stamp = {p: p.stat().st_mtime_ns for p in (work / "finetune").rglob("results/*.json")}
    capsys.readouterr()
    assert main(args) == 0                                    # resumes: nothing is trained again
    assert {p: p.stat().st_mtime_ns for p in (work / "finetune").rglob("results/*.json")} == stamp
