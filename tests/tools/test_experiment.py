"""facesift.experiment: what the studies and bench_fewshot share."""
from __future__ import annotations

import copy
from pathlib import Path

from facesift.experiment import collect, grid_keys, reuse_results
from facesift.finetune import grid

from tests.finetune.conftest import _one_thread, tiny_cfg, tiny_landmarks  # noqa: F401 (fixtures)


def test_reuse_copies_exactly_the_runs_with_identical_settings(tmp_path, tiny_landmarks):
    source = tiny_cfg(tmp_path / "a", task="landmarks", data=str(tiny_landmarks), fractions=[1.0, 0.5], seeds=2)
    assert grid.run_grid(source)["done"] == 4
    same = copy.deepcopy(source)
    same.out, same.fractions = str(tmp_path / "b"), [0.5]       # a study that shares the 50 % point
    done = Path(source.out)
    assert reuse_results(same, done, tmp_path / "b") == 2
    assert grid.run_grid(same) == {"done": 0, "skipped": 2, "failed": 0, "total": 2}
    rows = collect(tmp_path / "b" / "results", {"scratch": "scratch"})
    assert [(r["fraction"], r["seeds"]) for r in rows] == [(0.5, 2)]
    other = copy.deepcopy(same)
    other.out = str(tmp_path / "c")
    other.train.batch_size = 4                                  # another recipe: nothing is the same run
    assert reuse_results(other, done, tmp_path / "c") == 0
    assert reuse_results(same, tmp_path / "missing", tmp_path / "d") == 0


def test_collect_reads_any_metric_and_leaves_out_runs_without_it(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0], seeds=2)
    grid.run_grid(cfg)
    results = tmp_path / "ft" / "results"
    assert collect(results, {"scratch": "s"})[0]["seeds"] == 2
    assert collect(results, {"scratch": "s"}, metric="no-such-metric") == []
    # a run of earlier settings left in the folder: the grid's own keys count 2 seeds, not 3
    earlier = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0], seeds=1)
    earlier.train.weight_decay = 0.5
    grid.run_grid(earlier)
    assert collect(results, {"scratch": "s"})[0]["seeds"] == 3
    assert collect(results, {"scratch": "s"}, keys=grid_keys(cfg))[0]["seeds"] == 2
    assert collect(results, {"scratch": "s"}, keys=grid_keys(cfg, earlier))[0]["seeds"] == 3


def test_a_held_out_subset_is_fixed_and_kept_out_of_the_training_side(tmp_path):
    from facesift.experiment import heldout_split
    from facesift.finetune.datasets import read_landmarks

    from .test_study_redundancy import _lists
    train, test = _lists(tmp_path, 20, 12)
    work = tmp_path / "w"
    work.mkdir()
    _, full_list, _, full, _ = heldout_split(train, str(test), "unused", [], work)
    _, sub_list, train_recs, sub, _ = heldout_split(train, str(test), "unused", [], work, test_faces=5)
    assert len(full) == 12 and len(sub) == 5 and sub_list != full_list
    assert {r["key"] for r in sub} <= {r["key"] for r in full}
    assert not {r["path"] for r in sub} & {r["path"] for r in train_recs}
    by_key = {r["key"]: r for r in full}
    for r in read_landmarks(sub_list):   # the same images and labels, wherever the subset list lives
        assert r["path"] == by_key[r["key"]]["path"] and (r["target"] == by_key[r["key"]]["target"]).all()
    again = heldout_split(train, str(test), "unused", [], work, test_faces=5)[3]
    assert [r["key"] for r in again] == [r["key"] for r in sub]
    assert len(heldout_split(train, str(test), "unused", [], work, test_faces=50)[3]) == 12   # all of them
