"""The pieces an experiment over the whole chain repeats: run SwAV, run a fine-tuning grid on
several single-threaded ranks, stop them cleanly, and turn the grid's results into rows with
intervals over seeds. `tools/bench_fewshot.py` and `facesift study` (facesift.study_redundancy)
both use them, so a study and the benchmark run the recipe the same way."""
from __future__ import annotations

import copy
import fnmatch
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from facesift.common.atomic import atomic_write_json, atomic_write_text
from facesift.finetune.config import FinetuneConfig
from facesift.finetune.datasets import read_landmarks

log = logging.getLogger("facesift.experiment")
DEFAULT_EXCLUDE = ["net_7876/_*"]   # landmarks5 files whose labels sit above the face (docs/finetune.md)
FACESIFT = [sys.executable, "-m", "facesift"]   # the same interpreter and install as the caller
# The studies fine-tune many backbones x fractions x seeds: the few-shot recipe at half its batch
# (the same 600-step schedule, half the cost of a run) fits three studies in an afternoon on 2 cores.
STUDY_FINETUNE = ["train.batch_size=16"]

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of the seeds' values (a point when there is one seed)."""
    v = np.asarray(values, np.float64)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = T975.get(len(v) - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def training_lists(data: Path, test: str | None, source: str, exclude: list[str], work: Path
                   ) -> tuple[Path, Path, int]:
    """(training list, held-out list, faces excluded): `--data` minus the `--exclude` patterns,
    and without `--test` also minus the held-out `source` folder, which becomes the test list."""
    records = read_landmarks(data)
    root = data if data.is_dir() else data.parent

    def rel(r: dict) -> str:
        p = Path(r["path"])
        return str(p.relative_to(root)) if p.is_relative_to(root) else p.name
    kept = [r for r in records if not any(fnmatch.fnmatch(rel(r), pat) for pat in exclude)]
    dropped = len(records) - len(kept)
    if test is None:
        train = [r for r in kept if Path(r["path"]).parent.name != source]
        held = [r for r in records if Path(r["path"]).parent.name == source
                and not any(fnmatch.fnmatch(rel(r), pat) for pat in exclude)]
        if not train or not held:
            raise SystemExit(f"--holdout {source}: {len(train)} training and {len(held)} held-out faces in {data}")
        paths = [work / f"train-without-{source}.txt", work / f"test-{source}.txt"]
        sets = [train, held]
    else:
        paths, sets = [work / "train.txt"], [kept]
    for path, recs in zip(paths, sets):
        lines = [" ".join([r["path"], *(f"{v:.3f}" for v in r["target"][:, 0]), *(f"{v:.3f}" for v in r["target"][:, 1])])
                 for r in recs]
        text = "\n".join(lines) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return paths[0], (paths[1] if test is None else Path(test)), dropped


def heldout_split(data: Path, test: str | None, source: str, exclude: list[str], work: Path,
                  test_faces: int = 0) -> tuple[Path, Path, list[dict], list[dict], int]:
    """`training_lists` read back: (training list, held-out list, their records, faces excluded),
    after checking that no held-out face is in the training side, by path or by bytes.

    `test_faces` > 0 scores only that many held-out faces: a fixed subset (the lowest key
    hashes), written as its own list beside the others. A study evaluates dozens of runs, and
    at 1,200 faces the evaluation is a fifth of a run instead of a third."""
    from facesift.analysis.injected import check_no_leak
    from facesift.shards.split import key_score
    train_list, test_list, dropped = training_lists(data, test, source, [e for e in exclude if e], work)
    train, held = read_landmarks(train_list), read_landmarks(test_list)
    check_no_leak({r["key"]: r["path"] for r in train}, [r["path"] for r in held])
    if 0 < test_faces < len(held):
        keep = set(sorted((r["key"] for r in held), key=lambda k: key_score(k, 0))[:test_faces])
        lines = [" ".join([r["path"], *parts[1:]]) for parts, r in zip(_list_rows(test_list), held) if r["key"] in keep]
        test_list = work / f"{test_list.stem}-{test_faces}.txt"
        text = "\n".join(lines) + "\n"
        if not test_list.exists() or test_list.read_text() != text:
            atomic_write_text(test_list, text)
        held = read_landmarks(test_list)
    return train_list, test_list, train, held, dropped


def _list_rows(path: Path) -> list[list[str]]:
    """The split lines of a landmark list that `read_landmarks` reads, in its order."""
    rows = [line.split() for line in path.read_text().splitlines()]
    return [parts for parts in rows if parts and not parts[0].startswith("#")]


def write_pool_shards(records: list[dict], out: Path) -> Path:
    """The unlabelled pool as webdataset shards (jpg + provenance, no labels), for `facesift pretrain`."""
    from facesift.shards.writer import ShardWriter
    if (out / "index.json").exists():
        return out
    with ShardWriter(out, maxcount=2000, name="fewshot-pool") as writer:
        for r in records:
            writer.write_group([{"__key__": r["key"], "jpg": Path(r["path"]).read_bytes(),
                                 "json": {"source": "bench_fewshot", "path": r["path"]}}])
    return out


def pretrain(shards: Path, out: Path, config: Path, overrides: list[str], threads: int) -> tuple[Path, float]:
    """SwAV with the recipe; (backbone, seconds spent pretraining over every session)."""
    backbone, timing = out / "backbone.pt", out / "bench-seconds.json"
    spent = json.loads(timing.read_text())["seconds"] if timing.exists() else 0.0
    if backbone.exists():   # written when the schedule ends
        log.info("pretrained backbone exists: %s", backbone)
        return backbone, spent
    cmd = [*FACESIFT, "pretrain", "--shards", str(shards), "--out", str(out),
           "--config", str(config)]
    for o in overrides:
        cmd += ["--set", o]
    if (out / "last.pt").exists():
        cmd.append("--resume")
    out.mkdir(parents=True, exist_ok=True)
    log.info("pretraining: %s (log: %s)", " ".join(cmd), out / "pretrain.log")
    t0 = time.time()
    with open(out / "pretrain.log", "a") as fh:   # collapse_report counts the watch's warnings in it
        subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                       stdout=fh, stderr=subprocess.STDOUT)
    spent += time.time() - t0
    atomic_write_json(timing, {"seconds": spent})
    if not backbone.exists():
        raise SystemExit(f"pretraining finished without {backbone}")
    return backbone, spent


def finetune(cfg: FinetuneConfig, out: Path, ranks: int, threads: int, name: str = "recipe.yaml") -> list[int]:
    """`facesift finetune --config <recipe>` on `ranks` processes that split the grid by data point
    (each point's search and seeds on one rank), `threads // ranks` torch threads each: on 2 cores
    two single-threaded runs side by side do ~1.4x the work of one run on 2 threads."""
    from facesift.common.config import save_config
    recipe = save_config(cfg, out / name)
    cmd = [*FACESIFT, "finetune", "--config", str(recipe)]
    each = max(1, threads // ranks)
    env = dict(os.environ, WORLD_SIZE=str(ranks), OMP_NUM_THREADS=str(each))
    procs = [subprocess.Popen(cmd + ["--set", f"train.threads={each}"],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r))) for r in range(ranks)]
    try:
        return [p.wait() for p in procs]
    finally:   # interrupted (Ctrl-C, SIGTERM): ranks left running would hold the cores for hours
        stop_all(procs)


def stop_all(procs: list[subprocess.Popen], grace_s: float = 60.0) -> None:
    """SIGTERM what still runs (each rank checkpoints its run and exits), SIGKILL after `grace_s`."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def exit_on_sigterm() -> None:
    """SIGTERM (`kill`, a scheduler) unwinds like Ctrl-C, so the `finally` above stops the ranks."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


def collapse_report(ckpt: Path) -> str:
    """One line on the collapse monitor: last loss, code entropy against ln K, prototypes in use."""
    csv = ckpt / "metrics.csv"
    if not csv.exists():
        return "no metrics.csv"
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    head, last = rows[0], rows[-1]
    get = dict(zip(head, last))
    logfile = ckpt / "pretrain.log"
    warnings = (sum(1 for line in logfile.read_text().splitlines() if "COLLAPSE?" in line)   # CollapseWatch's warnings
                if logfile.exists() else "no pretrain.log")
    return (f"step {get.get('step')}: loss {get.get('loss')}, code entropy {get.get('entropy')}, "
            f"prototypes used {get.get('prototypes_used')}, largest share {get.get('max_share')}, "
            f"collapse warnings in log: {warnings}")


def grid_keys(*cfgs: FinetuneConfig) -> set[str]:
    """The result-file names (without .json) of every run of these grids, as `run_grid` names them."""
    from facesift.finetune.grid import plan, resolve_arch, run_key
    from facesift.finetune.tasks import load_task
    keys: set[str] = set()
    digests: dict = {}
    for cfg in cfgs:
        cfg = copy.deepcopy(cfg)
        resolve_arch(cfg)   # as run_grid does before hashing
        _, data = load_task(cfg)
        keys |= {run_key(cfg, data, run, digests) for run in plan(cfg)}
    return keys


def collect(results: Path, inits: dict[str, str], metric: str = "nme", keys: set[str] | None = None) -> list[dict]:
    """Rows {init, fraction, nme_mean, nme_ci, seeds} from the grid's result files: `metric`
    (e.g. "nme[turned]") under the row's `nme_*` names; a result without it is left out. With
    `keys` (`grid_keys`), only those runs: a folder also keeps the runs of earlier settings, and a
    table that counted them would report more seeds than the grid ran."""
    cells: dict[tuple[str, float], list[float]] = {}
    for path in sorted(results.glob("*.json")):
        if keys is not None and path.stem not in keys:
            continue
        r = json.loads(path.read_text())
        name = inits.get(r["init"])
        if name is None or metric not in r["metrics"]:
            continue
        cells.setdefault((name, float(r["fraction"])), []).append(float(r["metrics"][metric]))
    rows = []
    for (name, frac), values in sorted(cells.items(), key=lambda kv: (kv[0][0] != "scratch", -kv[0][1])):
        m, lo, hi = t_interval(values)
        rows.append({"init": name, "fraction": frac, "nme_mean": round(m, 3), "nme_ci": [round(lo, 3), round(hi, 3)],
                     "seeds": len(values)})
    return rows


def reuse_results(cfg: FinetuneConfig, source: Path, out: Path) -> int:
    """Copy into `out/results` the runs of `cfg`'s grid that `source` (another grid's folder)
    already finished with identical settings: the grid identifies a run by the hash of
    everything that changes its outcome, so a file under the same name is the same run. Two
    studies that share a data point (the same backbone, labels and recipe) train it once."""
    import shutil

    if not (source / "results").is_dir():
        return 0
    copied = 0
    (out / "results").mkdir(parents=True, exist_ok=True)
    for key in sorted(grid_keys(cfg)):
        src, dst = source / "results" / f"{key}.json", out / "results" / f"{key}.json"
        if src.exists() and not dst.exists():
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            copied += 1
    if copied:
        log.info("reused %d finished runs from %s", copied, source)
    return copied
