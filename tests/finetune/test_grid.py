"""The grid: the search never reads the test split, interrupted grids resume, results are complete."""
from __future__ import annotations

import json

import pytest

from facesift.finetune import datasets, grid
from facesift.finetune.tasks import load_task

from .conftest import tiny_cfg


@pytest.fixture
def read_log(monkeypatch):
    """Every image path the stage opens, in order (load_image is the only reader)."""
    seen: list[str] = []
    real = datasets.load_image

    def traced(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(datasets, "load_image", traced)
    return seen


def test_search_never_reads_the_test_split(tmp_path, tiny_landmarks, read_log, monkeypatch):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), trials=2, min_val=4)
    cfg.search.lr = [1e-3, 3e-3]
    _, data = load_task(cfg)
    test_paths = {r["path"] for r in data.test}
    assert test_paths
    phases = []
    real_search = grid.search

    def watched_search(*a, **kw):
        start = len(read_log)
        out = real_search(*a, **kw)
        phases.append(read_log[start:])
        return out

    monkeypatch.setattr(grid, "search", watched_search)
    counts = grid.run_grid(cfg)
    assert counts == {"done": 2, "skipped": 0, "failed": 0, "total": 2}
    searched = [p for phase in phases for p in phase]
    assert searched, "the search trained and validated on something"
    assert not test_paths & set(searched)            # the search never opened a test image
    assert test_paths <= set(read_log)                # ... while the final evaluation did
    results = [json.loads(p.read_text()) for p in (tmp_path / "ft" / "results").glob("*.json")]
    for r in results:
        assert len(r["search"]["trials"]) == 2
        assert r["sizes"]["test"] == len(data.test)
        assert r["sizes"]["search_fit"] + r["sizes"]["search_val"] == r["sizes"]["train"]
        assert r["hparams"] in [t["hparams"] for t in r["search"]["trials"]]
        assert r["primary_metric"] == "nme" and r["metrics"]["nme"] > 0
    # the search is cached per data point: a second grid over more seeds trains no new trial
    trial_files = sorted((tmp_path / "ft" / "search").rglob("*.json"))
    assert len(trial_files) == 4                       # 2 fractions x 2 trials
    cfg.seeds = 2
    assert grid.run_grid(cfg) == {"done": 2, "skipped": 2, "failed": 0, "total": 4}
    assert sorted((tmp_path / "ft" / "search").rglob("*.json")) == trial_files


def test_interrupted_grid_resumes(tmp_path, tiny_landmarks, monkeypatch):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0, 0.5, 0.25])
    real = grid.run_one
    calls = []

    def crash_on_third(cfg_, task, data, run, *a, **kw):
        calls.append(run)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cfg_, task, data, run, *a, **kw)

    monkeypatch.setattr(grid, "run_one", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(cfg)
    assert len(list((tmp_path / "ft" / "results").glob("*.json"))) == 2
    calls.clear()
    monkeypatch.setattr(grid, "run_one", lambda *a, **kw: (calls.append(a[3]), real(*a, **kw))[1])
    assert grid.run_grid(cfg) == {"done": 1, "skipped": 2, "failed": 0, "total": 3}
    assert [c.fraction for c in calls] == [0.25]      # only the unfinished run was trained


def test_run_checkpoint_resumes_mid_training(tmp_path, tiny_landmarks):
    from facesift.finetune import trainer
    from facesift.finetune.trainer import HParams
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks))
    cfg.train.ckpt_every = 2
    task, data = load_task(cfg)
    ckpt = tmp_path / "last.pt"
    model = trainer.build_model(task, "scratch", "resnet18")
    full = trainer.train(model, task, data.train[:16], HParams(1e-3, 4, 1.0), cfg.train, seed=0, ckpt=ckpt)
    assert ckpt.exists() and len(full) == 4
    model2 = trainer.build_model(task, "scratch", "resnet18")
    resumed = trainer.train(model2, task, data.train[:16], HParams(1e-3, 4, 1.0), cfg.train, seed=0, ckpt=ckpt)
    assert resumed[:2] == full[:2] and len(resumed) == 4   # the first two steps came from the checkpoint


def test_backbone_init_and_distillation(tmp_path, tiny_landmarks):
    import torch
    from facesift.pretrain.backbone import build_resnet
    path = tmp_path / "backbone.pt"
    torch.save(build_resnet("resnet18").state_dict(), path)
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), inits=["scratch", str(path)],
                   fractions=[0.5], distill=2, unlabelled="pool")
    assert grid.run_grid(cfg) == {"done": 2, "skipped": 0, "failed": 0, "total": 2}
    results = [json.loads(p.read_text()) for p in (tmp_path / "ft" / "results").glob("*.json")]
    assert {r["init"] for r in results} == {"scratch", str(path)}
    for r in results:
        assert [h["round"] for h in r["distill_rounds"]] == [1, 2]
        assert r["sizes"]["unlabelled"] == r["sizes"]["train_pool"] > r["sizes"]["train"]
    # a changed checkpoint is a different run
    torch.save(build_resnet("resnet18").state_dict(), path)
    assert grid.run_grid(cfg)["done"] == 1


def test_bad_init_is_a_clear_error(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), inits=["nope.pt"])
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        grid.run_grid(cfg)


def test_ranks_split_the_grid():
    runs = [grid.Run(i, f, s) for i in ("a", "b") for f in (1.0, 0.1) for s in range(3)]
    shares = [grid.rank_runs(runs, r, 3, by_data_point=False) for r in range(3)]
    assert sorted(sum(shares, []), key=runs.index) == runs and all(len(s) == 4 for s in shares)
    points = [grid.rank_runs(runs, r, 3, by_data_point=True) for r in range(3)]
    assert sorted(sum(points, []), key=runs.index) == runs
    for share in points:   # a data point's seeds stay together
        assert all(len([x for x in share if (x.init, x.fraction) == (r.init, r.fraction)]) == 3 for r in share)


def test_cli_finetune_then_curve(tmp_path, tiny_landmarks, capsys):
    from facesift.cli import main
    out = tmp_path / "cli"
    args = ["finetune", "--task", "landmarks", "--data", str(tiny_landmarks), "--inits", "scratch",
            "--fractions", "1,0.5", "--seeds", "1", "--image-size", "32", "--out", str(out),
            "--set", "search.steps=[2]", "--set", "train.batch_size=8", "--set", "train.workers=0"]
    assert main(args) == 0
    assert "finetune: done=2, skipped=0, failed=0" in capsys.readouterr().out
    assert (out / "config.yaml").exists()
    assert main(args) == 0
    assert "done=0, skipped=2" in capsys.readouterr().out
    assert main(["curve", str(out / "results")]) == 0
    assert "redundancy index" in capsys.readouterr().out
    assert main(args[:3] + ["--data", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
    assert "missing.txt" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_bf16_channels_last(tmp_path, tiny_landmarks):
    import torch
    from facesift.finetune import trainer
    from facesift.finetune.trainer import HParams
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), image_size=64)
    task, data = load_task(cfg)
    model = trainer.build_model(task, "scratch", "resnet50")
    dev = torch.device("cuda")
    losses = trainer.train(model, task, data.train[:32], HParams(1e-3, 20, 1.0), cfg.train, seed=0, device=dev)
    assert all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]
    assert model.trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.evaluate(model, task, data.test, cfg.train, device=dev)["nme"] > 0


def test_diverging_run_is_counted_failed_not_written(tmp_path, tiny_landmarks, monkeypatch):
    import torch
    from facesift.finetune.tasks import LandmarkTask
    monkeypatch.setattr(LandmarkTask, "loss", lambda self, model, out, target: out.float().mean() * torch.nan)
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[1.0])
    assert grid.run_grid(cfg) == {"done": 0, "skipped": 0, "failed": 1, "total": 1}
    assert not list((tmp_path / "ft" / "results").glob("*.json"))


def test_a_stop_signal_checkpoints_the_step_and_the_cli_exits_143(tmp_path, tiny_landmarks, capsys, monkeypatch):
    """SIGTERM mid-run (a scheduler's notice): the run checkpoints the step it finished, the grid
    stops, `facesift finetune` exits 143; the same command then resumes that run from its step."""
    import signal

    import torch

    from facesift.finetune.tasks import LandmarkTask
    from facesift.cli import main

    out = tmp_path / "cli"
    args = ["finetune", "--task", "landmarks", "--data", str(tiny_landmarks), "--inits", "scratch",
            "--fractions", "1", "--seeds", "1", "--image-size", "32", "--out", str(out),
            "--set", "search.steps=[6]", "--set", "train.batch_size=8", "--set", "train.workers=0",
            "--set", "train.ckpt_every=100"]  # only the stop and the end write a checkpoint
    real, calls = LandmarkTask.loss, [0]

    def loss_then_sigterm(self, *a):
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(self, *a)

    monkeypatch.setattr(LandmarkTask, "loss", loss_then_sigterm)
    assert main(args) == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    (ckpt,) = (out / "runs").rglob("last.pt")
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    assert not list((out / "results").glob("*.json"))
    monkeypatch.setattr(LandmarkTask, "loss", real)
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "finetune: done=1" in printed.out and "at step 3/6" in printed.err  # resumed, not restarted
    (result,) = (out / "results").glob("*.json")
    assert json.loads(result.read_text())["fraction"] == 1.0


def test_seeded_key_lists_give_each_seed_its_own_labelled_faces(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[0.5], seeds=2)
    _, data = load_task(cfg)
    keys = [r["key"] for r in data.train]
    for seed, chosen in ((0, keys[:3]), (1, keys[-4:])):
        (tmp_path / f"keys-{seed}.txt").write_text("\n".join(chosen) + "\n")
    cfg.fraction_keys = [f"0.5={tmp_path}/keys-{{seed}}.txt"]
    assert [r["key"] for r in grid.training_records(cfg, data, 0.5, 0)] == keys[:3]
    assert [r["key"] for r in grid.training_records(cfg, data, 0.5, 1)] == keys[-4:]
    assert grid.run_grid(cfg)["done"] == 2
    sizes = {r["seed"]: r["sizes"]["train"] for r in
             (json.loads(p.read_text()) for p in (tmp_path / "ft" / "results").glob("*.json"))}
    assert sizes == {0: 3, 1: 4}


def test_a_runs_result_does_not_depend_on_the_runs_before_it(tmp_path, tiny_landmarks):
    """Seed 1 trained after seed 0 in one process equals seed 1 trained alone (its seed-0 result
    already on disk, as after a resume or on another rank): the head is seeded before it is built."""
    import shutil

    import torch

    both = tiny_cfg(tmp_path / "both", task="landmarks", data=str(tiny_landmarks), fractions=[0.5], seeds=2)
    assert grid.run_grid(both)["done"] == 2
    done = {json.loads(p.read_text())["seed"]: p for p in (tmp_path / "both" / "ft" / "results").glob("*.json")}
    alone = tiny_cfg(tmp_path / "alone", task="landmarks", data=str(tiny_landmarks), fractions=[0.5], seeds=2)
    (tmp_path / "alone" / "ft" / "results").mkdir(parents=True)
    shutil.copy(done[0], tmp_path / "alone" / "ft" / "results" / done[0].name)
    torch.manual_seed(12345)   # whatever the process drew before
    torch.rand(1000)
    assert grid.run_grid(alone) == {"done": 1, "skipped": 1, "failed": 0, "total": 2}
    a, b = json.loads(done[1].read_text()), json.loads((tmp_path / "alone" / "ft" / "results" / done[1].name).read_text())
    assert a["train_loss"] == b["train_loss"] and a["metrics"] == b["metrics"]


def test_a_run_is_named_by_its_key_lists_content_not_its_path(tmp_path, tiny_landmarks):
    """A list rewritten under the same path is another run; naming other fractions' lists
    beside it, or moving it, is the same run."""
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[0.5, 1.0])
    task, data = load_task(cfg)
    keys = [r["key"] for r in data.train]
    (tmp_path / "a.txt").write_text("\n".join(keys[:4]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(reversed(keys[:4])) + "\n")   # same keys, other order and file
    (tmp_path / "other.txt").write_text("\n".join(keys[-3:]) + "\n")
    run = grid.Run("scratch", 0.5, 0)

    def key(*lists):
        cfg.fraction_keys = list(lists)
        return grid.run_key(cfg, data, run, {})

    first = key(f"0.5={tmp_path}/a.txt")
    assert key(f"0.5={tmp_path}/b.txt") == first
    assert key(f"1.0={tmp_path}/other.txt", f"0.5={tmp_path}/a.txt") == first
    assert key() != first                                 # the grid's own hash subset
    (tmp_path / "a.txt").write_text("\n".join(keys[1:5]) + "\n")
    assert key(f"0.5={tmp_path}/a.txt") != first


def test_a_missing_key_list_stops_the_grid_before_any_training(tmp_path, tiny_landmarks):
    cfg = tiny_cfg(tmp_path, task="landmarks", data=str(tiny_landmarks), fractions=[0.5], seeds=2)
    _, data = load_task(cfg)
    (tmp_path / "keys-0.txt").write_text(data.train[0]["key"] + "\n" + data.train[1]["key"] + "\n")
    cfg.fraction_keys = [f"0.5={tmp_path}/keys-{{seed}}.txt"]   # seed 1's list does not exist
    with pytest.raises(FileNotFoundError, match="keys-1.txt"):
        grid.run_grid(cfg)
    assert not list((tmp_path / "ft" / "results").glob("*.json"))
