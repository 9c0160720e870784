"""The pieces around the loop that need no training: the torchrun re-launch and the metrics log."""
from __future__ import annotations

import argparse
import csv

from facesift.cli import build_parser
from facesift.pretrain import launch
from facesift.pretrain.config import add_args
from facesift.pretrain.swav import SwAVStats
from facesift.pretrain.trainlog import CSV_FIELDS, TrainLog, trim_csv


def test_nproc_relaunches_the_same_options_under_torchrun(monkeypatch, tmp_path):
    (tmp_path / "c.yaml").write_text("pretrain:\n  data:\n    batch_size: 8\n")
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["pretrain", "--shards", "s/", "--out", "o/", "--config", "c.yaml",
                                      "--set", "max_steps=3", "--set", "data.workers=1", "--resume",
                                      "--nproc", "2"])
    worker = argparse.ArgumentParser()
    add_args(worker)
    again = worker.parse_args(launch.worker_argv(args))
    assert vars(again) == {k: getattr(args, k) for k in vars(again)}

    calls = []

    def fake_launch(a, n, env):
        # the launcher holds o/'s lock for the job and tells the workers so
        assert env["FACESIFT_PRETRAIN_LOCKED_OUT"] == str((tmp_path / "o").resolve())
        assert (tmp_path / "o" / ".facesift.lock").read_text()
        calls.append(n)
        return 0

    monkeypatch.setattr(launch, "launch", fake_launch)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.run(args, 2) == 0 and calls == [2]
    assert (tmp_path / "o" / ".facesift.lock").read_text() == ""  # released
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun worker trains itself: no launch of its own
    monkeypatch.setattr("facesift.pretrain.train.run_from_args", lambda a: 7)
    assert launch.run(args, 2) == 7 and calls == [2]


def test_metrics_rows_resume_trimming_and_a_quiet_bar_off_terminal(tmp_path, capsys):
    stats = SwAVStats(loss=2.5, entropy=1.0, prototypes_used=4, max_share=0.25)
    log = TrainLog(tmp_path, 0, 6, global_batch=8, log_every=2, enabled=True)
    for step in range(1, 6):
        for _ in log.timed([{}]):
            pass
        log.step_done(step, 0, 0.1, stats, bad_samples=step)
    log.close()
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_FIELDS and [r["step"] for r in rows] == ["2", "4"]
    assert float(rows[0]["images_per_s"]) > 0 and 0 <= float(rows[0]["data_wait"]) <= 1
    # stderr is no terminal here: the bar prints plain lines (start and close), not one per row
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pretrain:")]
    assert len(lines) == 2 and "\r" not in "".join(lines)

    trim_csv(tmp_path / "metrics.csv", 3)  # a run resumed from step 3 logs step 4 again
    with open(tmp_path / "metrics.csv") as fh:
        assert [r["step"] for r in csv.DictReader(fh)] == ["2"]

    quiet = TrainLog(tmp_path / "other", 0, 6, global_batch=8, log_every=1, enabled=False)  # ranks > 0
    quiet.step_done(1, 0, 0.1, stats, 0)
    quiet.close()
    assert not (tmp_path / "other").exists()
