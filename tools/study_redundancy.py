"""`facesift study redundancy`: does the cheap redundancy measure predict the expensive curve?

The paper measures a dataset's redundancy the expensive way: pretrain on it, fine-tune at a few
label fractions and read the NME. `facesift redundancy` measures it in minutes. This study
builds pretraining sets that differ in redundancy only (`facesift.analysis.injected`: equal
size N, a known rate of near-duplicate copies made with crawl-like edits, originals from one
de-duplicated pool of training faces) and measures each set both ways:

* cheap: `facesift redundancy` on the set (unique fraction, effective clusters, effective size);
* expensive: SwAV on the set with one budget (`configs/cpu-fewshot.yaml`, `pretrain_epochs`),
  then landmark fine-tuning at `fractions` of the labels, `seeds` seeds, scored on held-out
  faces framed another way (`tools/bench_fewshot.py`'s split: train lfw_5590, test net_7876).
  The labelled faces are the same for every set; only the backbone differs. Scratch runs once
  as the reference.

Then one table, `study.json`, `study.png` (both measures against the injected rate) and the
Spearman rank agreement between the cheap measure and the NME. Every stage is kept on disk
and skipped when done, so the same command resumes; the work folder is locked.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facesift.common.atomic import atomic_write_json, atomic_write_text
from facesift.common.config import bounded, bounded_list, save_config, to_dict
from facesift.experiment import (DEFAULT_EXCLUDE, FACESIFT, STUDY_FINETUNE, collapse_report, collect, finetune,
                                 grid_keys, heldout_split, pretrain)

log = logging.getLogger("facesift.study")
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclass
class SetStudyConfig:
    """What every study over pretraining sets shares: the labelled pool and its held-out faces,
    the set size, the SwAV budget and the fine-tuning recipe. The default budget fits a 2-core
    CPU; raise `size`, `pretrain_epochs`, `seeds` and the recipes' sizes for a GPU (`--set`)."""
    data: str = str(CHECKOUT.parent / "shared" / "data" / "landmarks5")   # labelled pool (landmarks5 layout)
    test: str = ""                     # a held-out '<img> x1..x5 y1..y5' list; empty: the `holdout` folder
    holdout: str = "net_7876"
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    test_faces: int = bounded(1200, 0)  # held-out faces scored: a fixed hash subset (0: all of them)
    size: int = bounded(2000, 10)      # N: images in every pretraining set
    seed: int = 0
    dedup: bool = True                 # remove the pool's own near-duplicates first (`facesift redundancy`)
    pretrain_config: str = str(CHECKOUT / "configs" / "cpu-fewshot.yaml")
    pretrain_epochs: int = bounded(4, 1)   # 200 steps of 128 in cpu-fewshot: ~16 minutes a set on 2 cores
    pretrain_set: list[str] = field(default_factory=list)    # more `--set` for `facesift pretrain`
    finetune_config: str = str(CHECKOUT / "configs" / "finetune-fewshot.yaml")
    finetune_set: list[str] = field(default_factory=lambda: list(STUDY_FINETUNE))   # `--set`s for the recipe
    seeds: int = bounded(3, 1)
    trials: int = bounded(1, 1)        # the recipe's first values for every set: one recipe for all
    threads: int = bounded(2, 1)
    ranks: int = bounded(2, 1)


@dataclass
class StudyConfig(SetStudyConfig):
    """About 1 h 45 min on a 2-core CPU at the defaults (3 pretrainings, 18 fine-tuning runs)."""
    rates: list[float] = bounded_list([0.0, 0.5, 0.8], 0.0, 0.95)
    fractions: list[float] = bounded_list([0.1, 0.02], 0.001, 1.0)
    scratch: bool = False              # also fine-tune from scratch, as a reference (+6 runs, ~35 min)


def _run(cmd: list[str], logfile: Path) -> None:
    import subprocess
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s (log: %s)", " ".join(cmd[2:]), logfile)
    with open(logfile, "a") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"`{' '.join(cmd[2:4])}` exited {code}; see {logfile}")


def redundancy(shards: Path, out: Path) -> dict:
    """`facesift redundancy` on `shards` (embedding them first), its summary kept in `out`."""
    summary = out / "summary.json"
    if not summary.exists():
        _run([*FACESIFT, "redundancy", "--shards", str(shards), "--out", str(out), "--no-progress"],
             out.parent / f"{out.name}.log")
    return json.loads(summary.read_text())


def cheap_measures(summary: dict) -> dict:
    clusters = summary.get("clusters", {})
    return {"unique_fraction": round(float(summary["unique_fraction"]), 4),
            "effective_size": int(summary["effective_size"]),
            "effective_clusters": round(float(clusters.get("effective_clusters", float("nan"))), 2),
            "groups": int(summary["groups"]), "threshold": summary.get("threshold")}


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho of two equal-length lists (None with fewer than 3 points or a constant list)."""
    from scipy.stats import spearmanr
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return round(float(spearmanr(a, b).statistic), 3)


def _pool(cfg: SetStudyConfig, work: Path):
    train_list, test_list, train, test, dropped = heldout_split(Path(cfg.data), cfg.test or None, cfg.holdout,
                                                                cfg.exclude, work, cfg.test_faces)
    return train_list, test_list, train, len(test), dropped


def pool_yaws(records: list[dict]) -> dict[str, float]:
    """key -> yaw of the labelled 5 points (what curate would store), for `data.pose_balance`."""
    from facesift.common.geometry import estimate_yaw
    records = [r for r in records if r["target"].shape[0] == 5]
    if not records:
        return {}
    yaws = estimate_yaw(np.stack([r["target"] for r in records]))
    return {r["key"]: float(y) for r, y in zip(records, yaws)}


def _originals(cfg: SetStudyConfig, paths: dict[str, str], work: Path, yaws: dict[str, float] | None = None
               ) -> tuple[list[str], dict | None]:
    """The pool's keys, without its own near-duplicates when `dedup` (keep.txt of `redundancy`)."""
    from facesift.analysis.injected import Member, write_set
    if not cfg.dedup:
        return sorted(paths), None
    shards = write_set([Member(k, k, "orig") for k in sorted(paths)], paths, work / "pool" / "shards",
                       "study-pool", cfg.seed, yaws)
    summary = redundancy(shards, work / "pool" / "redundancy")
    keep = set((work / "pool" / "redundancy" / "keep.txt").read_text().split())
    return sorted(k for k in paths if k in keep), cheap_measures(summary)


def run_study(cfg: StudyConfig, work: Path) -> dict:
    from facesift.analysis.injected import plan_set, write_set
    from facesift.common.config import resolve
    from facesift.finetune.baseline import cached_mean_shape
    from facesift.finetune.config import FinetuneConfig
    from facesift.finetune.tasks import load_task

    t0 = time.time()
    save_config(cfg, work / "study.yaml")
    train_list, test_list, train, n_test, dropped = _pool(cfg, work)
    paths, yaws = {r["key"]: r["path"] for r in train}, pool_yaws(train)
    originals, pool_measures = _originals(cfg, paths, work, yaws)
    log.info("pool: %d training faces, %d unique after de-duplication; %d held-out faces (%s)",
             len(paths), len(originals), n_test, test_list)
    ft = resolve(FinetuneConfig, cfg.finetune_config, cfg.finetune_set, section="finetune", task="landmarks",
                 data=str(train_list), test=str(test_list), seeds=cfg.seeds, trials=cfg.trials)
    ft.fractions = list(cfg.fractions)
    ft.check()
    sets = []
    for rate in cfg.rates:
        name = f"rate-{round(100 * rate):02d}"
        folder = work / "sets" / name
        members = plan_set(originals, cfg.size, rate, cfg.seed)
        shards = write_set(members, paths, folder / "shards", f"study-{name}", cfg.seed, yaws)
        cheap = cheap_measures(redundancy(shards, folder / "redundancy"))
        overrides = [f"optim.epochs={cfg.pretrain_epochs}", *cfg.pretrain_set]
        backbone, seconds = pretrain(shards, folder / "ckpt", Path(cfg.pretrain_config), overrides, cfg.threads)
        sets.append({"name": name, "rate": rate, "size": len(members),
                     "unique_originals": sum(m.edit == "orig" for m in members), **cheap,
                     "backbone": str(backbone), "pretrain_s": round(seconds, 1),
                     "collapse": collapse_report(folder / "ckpt")})
    ft.inits = (["scratch"] if cfg.scratch else []) + [s["backbone"] for s in sets]
    ft_out = work / "finetune"
    ft.out = str(ft_out)
    t1 = time.time()
    codes = finetune(copy.deepcopy(ft), ft_out, cfg.ranks, cfg.threads, name="recipe.yaml")
    if any(codes):
        raise RuntimeError(f"fine-tuning exited {codes}; see the logs above (re-run to resume)")
    names = {s["backbone"]: s["name"] for s in sets} | {"scratch": "scratch"}
    rows = collect(ft_out / "results", names, keys=grid_keys(ft))
    task, split = load_task(ft)
    baseline = cached_mean_shape(task, split.train, split.test, ft_out)[task.primary]
    by = {(r["init"], r["fraction"]): r for r in rows}
    for s in sets:
        s["nme"] = {str(f): by.get((s["name"], f)) for f in cfg.fractions}
    agreement = {}
    for f in cfg.fractions:
        nme = [s["nme"][str(f)]["nme_mean"] if s["nme"][str(f)] else float("nan") for s in sets]
        agreement[str(f)] = {
            # +1: the sets with the larger effective size are the ones that fine-tune better
            "effective_size_vs_nme": spearman([s["effective_size"] for s in sets], [-v for v in nme]),
            "unique_fraction_vs_nme": spearman([s["unique_fraction"] for s in sets], [-v for v in nme]),
            "rate_vs_nme": spearman([s["rate"] for s in sets], nme)}
    result = {"config": to_dict(cfg), "pool": {"faces": len(paths), "unique": len(originals), "excluded": dropped,
                                               "measures": pool_measures},
              "test": {"faces": n_test, "list": str(test_list)}, "sets": sets,
              "scratch": {str(f): by.get(("scratch", f)) for f in cfg.fractions} if cfg.scratch else None,
              "mean_shape_nme": round(baseline, 3), "spearman": agreement,
              "cheap_vs_rate": spearman([s["rate"] for s in sets], [-s["effective_size"] for s in sets]),
              "finetune_s_this_session": round(time.time() - t1, 1), "session_s": round(time.time() - t0, 1)}
    atomic_write_json(work / "study.json", result)
    atomic_write_text(work / "study.txt", format_table(result) + "\n")
    plot(result, work / "study.png")
    return result


def format_table(result: dict) -> str:
    fracs = [float(f) for f in result["config"]["fractions"]]

    def cell(r):
        return f"{r['nme_mean']:.2f} [{r['nme_ci'][0]:.2f}, {r['nme_ci'][1]:.2f}]" if r else "-"
    head = (f"{'set':>8} | {'rate':>5} | {'unique fr.':>10} | {'eff. size':>9} | {'eff. clusters':>13} | "
            + " | ".join(f"{'NME % at ' + format(100 * f, 'g') + ' %':>24}" for f in fracs))
    lines = [head]
    for s in result["sets"]:
        lines.append(f"{s['name']:>8} | {s['rate']:>5.2f} | {s['unique_fraction']:>10.3f} | {s['effective_size']:>9d} | "
                     f"{s['effective_clusters']:>13.1f} | "
                     + " | ".join(f"{cell(s['nme'][str(f)]):>24}" for f in fracs))
    if result.get("scratch"):
        lines.append(f"{'scratch':>8} | {'':>5} | {'':>10} | {'':>9} | {'':>13} | "
                     + " | ".join(f"{cell(result['scratch'][str(f)]):>24}" for f in fracs))
    lines.append(f"mean shape: {result['mean_shape_nme']:.2f} % NME; {result['test']['faces']} held-out faces")
    for f in fracs:
        a = result["spearman"][str(f)]
        lines.append(f"Spearman at {100 * f:g} %: effective size vs -NME {a['effective_size_vs_nme']}, "
                     f"unique fraction vs -NME {a['unique_fraction_vs_nme']}, injected rate vs NME {a['rate_vs_nme']}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sets = result["sets"]
    rates = [100 * s["rate"] for s in sets]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(rates, [s["unique_fraction"] for s in sets], "o-", label="unique fraction (redundancy)")
    a.plot(rates, [s["effective_size"] / s["size"] for s in sets], "s--", label="effective size / N")
    a.plot(rates, [1 - s["rate"] for s in sets], ":", color="grey", label="injected: 1 - rate")
    a.set(xlabel="injected near-duplicates %", ylabel="fraction of N", title="cheap: facesift redundancy")
    a.legend(fontsize=8)
    for f in result["config"]["fractions"]:
        cells = [s["nme"][str(f)] for s in sets]
        ok = [(r, c) for r, c in zip(rates, cells) if c]
        if ok:
            xs, cs = zip(*ok)
            ys = [c["nme_mean"] for c in cs]
            err = [[y - c["nme_ci"][0] for y, c in zip(ys, cs)], [c["nme_ci"][1] - y for y, c in zip(ys, cs)]]
            b.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"SwAV, {100 * float(f):g} % labels")
        s = (result.get("scratch") or {}).get(str(f))
        if s:
            b.axhline(s["nme_mean"], ls="--", lw=1, color=b.lines[-1].get_color() if b.lines else None,
                      label=f"scratch, {100 * float(f):g} %")
    b.axhline(result["mean_shape_nme"], color="grey", ls=":", label="mean shape")
    b.set(xlabel="injected near-duplicates %", ylabel="held-out NME % (95 % CI)", title="expensive: SwAV + fine-tune")
    b.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
