"""What stops a pretrain before it does harm (issue 12, defects 10 and 11): an --out that is a
file, a --resume that does not fit the config or whose last.pt is damaged, and a second run on
the same output directory. Each is one line and exit 2, and leaves the checkpoint as it was."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from facesift.cli import main as cli_main
from facesift.common.config import to_dict
from facesift.common.lock import LOCK_NAME, output_lock
from tests.pretrain.test_train import tiny

ROOT = Path(__file__).resolve().parents[2]


def _cli(face_shards, out: Path, cfg_file: Path, *extra: str) -> list[str]:
    return ["pretrain", "--shards", str(face_shards), "--out", str(out), "--config", str(cfg_file), *extra]


def _config(tmp_path: Path, face_shards, out: Path, **kw) -> Path:
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"pretrain": to_dict(tiny(face_shards, out, **kw))}))
    return cfg_file


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if " ERROR " in line or "Traceback" in line]


def test_an_out_that_is_a_file_is_refused(face_shards, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("my notes\n")
    status = cli_main(_cli(face_shards, out, _config(tmp_path, face_shards, out, max_steps=1)))
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert len(_error_lines(err)) == 1 and f"--out {out} exists and is not a directory" in err, err
    assert out.read_text() == "my notes\n"


@pytest.fixture(scope="module")
def finished_run(face_shards, tmp_path_factory) -> Path:
    """A 2-step resnet18 run; tests copy its folder before they touch it."""
    from facesift.pretrain.train import train
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(face_shards, out, max_steps=2))
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(LOCK_NAME))
    return dst


def _resume(face_shards, tmp_path, out, capsys, **kw) -> tuple[int, str]:
    cfg_file = _config(tmp_path, face_shards, out, max_steps=3, **kw)
    status = cli_main(_cli(face_shards, out, cfg_file, "--resume"))
    return status, capsys.readouterr().err


def test_resume_with_another_arch_names_the_change(face_shards, tmp_path, finished_run, capsys):
    from facesift.pretrain.config import ModelConfig
    out = _copy_run(finished_run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    model = ModelConfig(arch="resnet34", hidden_mlp=32, feat_dim=16, nmb_prototypes=10)
    status, err = _resume(face_shards, tmp_path, out, capsys, model=model)
    assert status == 2 and "Traceback" not in err, err
    lines = _error_lines(err)
    assert len(lines) == 1 and "trained with model.arch=resnet18 but the config says resnet34" in lines[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != LOCK_NAME} == before


def test_resume_without_a_saved_config_lists_the_keys_that_differ(face_shards, tmp_path, finished_run, capsys):
    """A checkpoint whose config does not say (an older or hand-made one): the state_dict's own
    differences, the first few missing/unexpected keys and shape mismatches."""
    from facesift.pretrain.config import ModelConfig
    out = _copy_run(finished_run, tmp_path / "run")
    ck = torch.load(out / "last.pt", weights_only=False)
    del ck["config"]
    torch.save(ck, out / "last.pt")
    before = (out / "last.pt").read_bytes()
    model = ModelConfig(arch="resnet18", hidden_mlp=32, feat_dim=24, nmb_prototypes=10)
    status, err = _resume(face_shards, tmp_path, out, capsys, model=model)
    assert status == 2 and "Traceback" not in err, err
    assert "does not fit" in err and "shape" in err and "(16, 32) vs (24, 32)" in err, err
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "empty", "backbone", "unsafe"])
def test_resume_from_a_damaged_last_pt_is_one_line_and_leaves_it(face_shards, tmp_path, finished_run, capsys,
                                                                 damage):
    from tests.pretrain.test_backbone_loading import _Mkdir
    out = _copy_run(finished_run, tmp_path / "run")
    data = (out / "last.pt").read_bytes()
    if damage == "unsafe":  # a last.pt that would run code if loaded with weights_only=False
        ck = torch.load(out / "last.pt", weights_only=False)
        ck["config"] = _Mkdir(str(tmp_path / "PWNED"))
        torch.save(ck, out / "last.pt")
    else:
        (out / "last.pt").write_bytes({"truncated": data[: len(data) // 3], "empty": b"",
                                       "backbone": (out / "backbone.pt").read_bytes()}[damage])
    damaged = (out / "last.pt").read_bytes()
    status, err = _resume(face_shards, tmp_path, out, capsys)
    assert status == 2 and "Traceback" not in err, err
    lines = _error_lines(err)
    assert len(lines) == 1 and f"cannot resume: not a pretrain checkpoint: {out / 'last.pt'}" in lines[0], err
    assert "weights_only" not in err and not (tmp_path / "PWNED").exists()
    assert (out / "last.pt").read_bytes() == damaged


def _hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding OUT's lock (as a running pretrain does) until killed."""
    code = ("import sys, time; from facesift.common.lock import output_lock\n"
            "with output_lock(sys.argv[1], command='facesift pretrain (the first one)'):\n"
            "    print('locked', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_out_exits_2_naming_the_holder(face_shards, tmp_path, capsys):
    out = tmp_path / "run"
    cfg_file = _config(tmp_path, face_shards, out, max_steps=1)
    holder = _hold_lock(out)
    try:
        status = cli_main(_cli(face_shards, out, cfg_file))
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err, err
        assert f"pid {holder.pid}" in err and "in use by another run" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
        # --nproc: the launcher refuses before starting torchrun
        status = cli_main(_cli(face_shards, out, cfg_file, "--nproc", "2"))
        err = capsys.readouterr().err
        assert status == 2 and f"pid {holder.pid}" in err and "Traceback" not in err, err
    finally:
        holder.kill()
        holder.wait()
    assert cli_main(_cli(face_shards, out, cfg_file)) == 0  # the holder is gone: the lock with it


def test_the_lock_is_held_while_training_and_released_on_every_exit(face_shards, tmp_path, monkeypatch, capsys):
    """During the run a second pretrain is refused; after a normal end, a stop signal and an
    error the directory is free again (checked in this process: a lock still held by an open
    descriptor here would refuse it too)."""
    from facesift.pretrain import train as train_mod
    out = tmp_path / "run"
    cfg_file = _config(tmp_path, face_shards, out, max_steps=2)
    real_step = train_mod._sgd_step
    seen: dict[str, object] = {}

    def step(cfg, model, core, optimizer, crops, lr, state, amp):
        if not seen.get("checked"):  # the first step of each run
            seen["checked"] = True
            seen["second"] = cli_main(_cli(face_shards, out, cfg_file, "--restart"))
            seen["err"] = capsys.readouterr().err
            if seen.get("signal"):
                signal.raise_signal(signal.SIGTERM)
            if seen.get("fail"):
                raise ValueError("loss went wrong on purpose")
        return real_step(cfg, model, core, optimizer, crops, lr, state, amp)

    monkeypatch.setattr(train_mod, "_sgd_step", step)
    assert cli_main(_cli(face_shards, out, cfg_file)) == 0
    assert seen["second"] == 2 and f"pid {os.getpid()}" in seen["err"]
    with output_lock(out):
        pass

    seen.update(signal=True, checked=False)
    assert cli_main(_cli(face_shards, out, cfg_file, "--restart")) == 143  # stopped with a checkpoint
    with output_lock(out):
        pass

    assert seen["second"] == 2
    seen.update(signal=False, fail=True, checked=False, second=None)
    assert cli_main(_cli(face_shards, out, cfg_file, "--resume")) == 2
    assert seen["second"] == 2
    with output_lock(out):
        pass


@pytest.mark.timeout(300)
def test_a_torchrun_job_on_a_locked_out_stops_on_every_rank(face_shards, tmp_path):
    """Rank 0 holds the lock for the job; when it cannot, every rank stops at once (none waits
    in a collective for a rank 0 that left) and only rank 0 says why."""
    out = tmp_path / "run"
    cfg_file = _config(tmp_path, face_shards, out, max_steps=1)
    holder = _hold_lock(out)
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "facesift.pretrain.train", "--shards", str(face_shards), "--out", str(out),
                               "--config", str(cfg_file)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode != 0 and time.monotonic() - t0 < 200
        text = done.stdout + done.stderr
        assert text.count(f"in use by another run: pid {holder.pid}") == 1, text[-3000:]
    finally:
        holder.kill()
        holder.wait()
