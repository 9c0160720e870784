"""`facesift study selection`: which 2 % (or 10 %) of the faces to label?

The paper and VISSL label a random subset. With the redundancy stage's clusters and
near-duplicate groups of the labelled pool, a study can choose better, or find that it cannot.
Each method picks, for every seed and fraction, exactly as many faces as the random subset of
that seed holds (the grid's hash subset: `finetune.fractions`), so only *which* faces are
labelled differs:

* `random`: the grid's own subset (what `facesift finetune` does by default);
* `random-dedup`: random among the faces `facesift redundancy` keeps (one per near-duplicate group);
* `cluster-balanced`: `shards split --method cluster-balanced`'s order, round-robin over clusters;
* `cluster-typical`: the same round-robin, each cluster's face nearest its centroid first.

Every method is fine-tuned with one recipe (`configs/finetune-fewshot.yaml`, first search values)
from one init, `seeds` seeds, and scored on the held-out faces framed another way. A method's
key lists are written per seed (`keys/<method>/seed<s>-<f>.txt`) and handed to the grid as
`fraction_keys` with a `{seed}` in the path. Resumable and locked like every study.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from facesift.common.atomic import atomic_write_json, atomic_write_text
from facesift.common.config import bounded, bounded_list, save_config, to_dict
from facesift.experiment import (DEFAULT_EXCLUDE, STUDY_FINETUNE, collect, finetune, grid_keys, heldout_split,
                                 reuse_results)

log = logging.getLogger("facesift.study")
CHECKOUT = Path(__file__).resolve().parents[1]
METHODS = ("random", "random-dedup", "cluster-balanced", "cluster-typical")


@dataclass
class SelectionConfig:
    """The default budget (4 methods x 2 fractions x 3 seeds, scratch init) is about an hour on
    a 2-core CPU; `init` takes a pretrained backbone, `reuse` another grid's finished runs."""
    data: str = str(CHECKOUT.parent / "shared" / "data" / "landmarks5")
    test: str = ""                     # a held-out '<img> x1..x5 y1..y5' list; empty: the `holdout` folder
    holdout: str = "net_7876"
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    test_faces: int = bounded(1200, 0)  # held-out faces scored: a fixed hash subset (0: all of them)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    fractions: list[float] = bounded_list([0.1, 0.02], 0.001, 0.999)
    seeds: int = bounded(3, 1)
    init: str = "scratch"              # or a backbone.pt (e.g. a study's SwAV)
    redundancy: str = ""               # `facesift redundancy` output on the labelled pool; empty: run it here
    reuse: str = ""                    # a fine-tuning folder whose identical runs are copied, not re-trained
    lists: str = ""                    # the folder of the training/held-out lists (a run's identity names
                                       # them): the reused study's folder; empty: the work folder
    finetune_config: str = str(CHECKOUT / "configs" / "finetune-fewshot.yaml")
    finetune_set: list[str] = field(default_factory=lambda: list(STUDY_FINETUNE))   # `--set`s for the recipe
    trials: int = bounded(1, 1)
    threads: int = bounded(2, 1)
    ranks: int = bounded(2, 1)

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods {self.methods}: distinct names out of {', '.join(METHODS)}")
        for path in (self.data, self.test, self.finetune_config, self.redundancy, self.lists):   # `reuse` may fill up later
            if path and not Path(path).exists():
                raise FileNotFoundError(f"{path}: not found")
        if self.init != "scratch" and not Path(self.init).is_file():
            raise FileNotFoundError(f"init {self.init}: no such checkpoint (or 'scratch')")


def pool_redundancy(cfg: SelectionConfig, train: list[dict], work: Path) -> Path:
    """The labelled pool's `facesift redundancy` folder: the given one, or one run here."""
    from facesift.analysis.injected import Member, write_set
    from facesift.study_redundancy import redundancy
    if cfg.redundancy:
        return Path(cfg.redundancy)
    paths = {r["key"]: r["path"] for r in train}
    shards = write_set([Member(k, k, "orig") for k in sorted(paths)], paths, work / "pool" / "shards", "selection-pool")
    redundancy(shards, work / "pool" / "redundancy")
    return work / "pool" / "redundancy"


def select(method: str, keys: list[str], n: int, seed: int, keep: set[str],
           clusters: dict[str, int], sims: dict[str, float]) -> list[str]:
    """`n` keys of `keys` chosen by `method` for `seed` (random is the grid's own subset)."""
    from facesift.analysis.selection import balanced_order
    from facesift.shards.split import key_score
    if method == "random-dedup":
        order = sorted((k for k in keys if k in keep), key=lambda k: key_score(k, seed))
        order += sorted((k for k in keys if k not in keep), key=lambda k: key_score(k, seed))
    else:
        order = balanced_order(keys, clusters, seed, sims if method == "cluster-typical" else None)
    return order[:n]


def write_key_lists(cfg: SelectionConfig, train: list[dict], red: Path, work: Path) -> tuple[dict, list[str]]:
    """Every non-random method's key list per seed and fraction, sized like random's subset;
    also the methods whose every list *is* random's subset (random-dedup on a pool whose few
    near-duplicates no subset drew): their runs would repeat random's, so they are not trained."""
    from facesift.analysis.selection import read_cluster_table, split_table
    from facesift.finetune.fractions import fraction_subset
    keys = [r["key"] for r in train]
    keep = set((red / "keep.txt").read_text().split())
    clusters, sims = split_table(read_cluster_table(red))
    missing = [k for k in keys if k not in clusters]
    if missing:
        raise ValueError(f"{red}: {len(missing)} training faces have no cluster (e.g. {missing[0]}); "
                         f"the redundancy run is of another pool")
    sizes: dict[str, dict] = {}
    same = {m for m in cfg.methods if m != "random"}
    for method in cfg.methods:
        if method == "random":
            continue
        for seed in range(cfg.seeds):
            for f in cfg.fractions:
                subset = {r["key"] for r in fraction_subset(train, f, seed)}
                n = len(subset)
                chosen = select(method, keys, n, seed, keep, clusters, sims)
                if set(chosen) != subset:
                    same.discard(method)
                path = work / "keys" / method / f"seed{seed}-{f:g}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                text = "\n".join(chosen) + "\n"
                if not path.exists() or path.read_text() != text:
                    atomic_write_text(path, text)
                sizes.setdefault(method, {})[f"{f:g}/{seed}"] = n
    return sizes, sorted(same)


def run_selection(cfg: SelectionConfig, work: Path) -> dict:
    from facesift.common.config import resolve
    from facesift.finetune.baseline import cached_mean_shape
    from facesift.finetune.config import FinetuneConfig
    from facesift.finetune.tasks import load_task

    t0 = time.time()
    save_config(cfg, work / "study.yaml")
    lists = Path(cfg.lists).resolve() if cfg.lists else work
    train_list, test_list, train, test, dropped = heldout_split(Path(cfg.data), cfg.test or None, cfg.holdout,
                                                                cfg.exclude, lists, cfg.test_faces)
    red = pool_redundancy(cfg, train, work)
    sizes, as_random = write_key_lists(cfg, train, red, work)
    if as_random and "random" in cfg.methods:
        log.info("%s: every subset is random's (no near-duplicate drawn); its rows are random's", ", ".join(as_random))
    base = resolve(FinetuneConfig, cfg.finetune_config, cfg.finetune_set, section="finetune", task="landmarks",
                   data=str(train_list), test=str(test_list), seeds=cfg.seeds, trials=cfg.trials)
    base.fractions = list(cfg.fractions)
    init = cfg.init if cfg.init == "scratch" else str(Path(cfg.init).resolve())   # as a study names it
    base.inits = [init]
    base.check()
    rows = {}
    # random last: its runs are the ones another grid (`reuse`) may have finished in the meantime
    for method in sorted(cfg.methods, key=lambda m: m == "random"):
        if method in as_random and "random" in cfg.methods:
            continue
        ft = copy.deepcopy(base)
        out = work / "finetune" / method
        ft.out = str(out)
        if method != "random":
            ft.fraction_keys = [f"{f!r}={work / 'keys' / method}/seed{{seed}}-{f:g}.txt" for f in cfg.fractions]
        elif cfg.reuse:
            reuse_results(ft, Path(cfg.reuse), out)
        log.info("method %s: fine-tuning (%s)", method, out)
        codes = finetune(ft, out, cfg.ranks, cfg.threads, name="recipe.yaml")
        if any(codes):
            raise RuntimeError(f"fine-tuning {method} exited {codes}; see the logs above (re-run to resume)")
        rows[method] = {str(r["fraction"]): r for r in collect(out / "results", {init: method}, keys=grid_keys(ft))}
    rows = {m: rows["random"] if m in as_random and "random" in cfg.methods else rows[m] for m in cfg.methods}
    task, split = load_task(base)
    baseline = cached_mean_shape(task, split.train, split.test, work / "finetune")[task.primary]
    result = {"config": to_dict(cfg), "pool": {"faces": len(train), "excluded": dropped, "redundancy": str(red),
                                               "kept": len(set((red / "keep.txt").read_text().split()))},
              "test": {"faces": len(test), "list": str(test_list)}, "labels": sizes, "methods": rows,
              "same_as_random": as_random,
              "verdict": verdict(rows, cfg.fractions), "mean_shape_nme": round(baseline, 3),
              "session_s": round(time.time() - t0, 1)}
    atomic_write_json(work / "study.json", result)
    atomic_write_text(work / "study.txt", format_table(result) + "\n")
    return result


def verdict(rows: dict[str, dict], fractions: list[float]) -> dict[str, dict]:
    """Per fraction: the best method by mean NME, its margin over random, and whether its
    interval overlaps random's (then the data cannot tell them apart)."""
    out = {}
    for f in fractions:
        cells = {m: r.get(str(float(f))) for m, r in rows.items() if r.get(str(float(f)))}
        if not cells:
            continue
        best = min(cells, key=lambda m: cells[m]["nme_mean"])
        ref = cells.get("random")
        entry = {"best": best, "nme": cells[best]["nme_mean"]}
        if ref and best != "random":
            lo, hi = cells[best]["nme_ci"]
            entry |= {"minus_random": round(cells[best]["nme_mean"] - ref["nme_mean"], 3),
                      "overlaps_random": not (hi < ref["nme_ci"][0] or lo > ref["nme_ci"][1])}
        out[str(float(f))] = entry
    return out


def format_table(result: dict) -> str:
    fracs = [float(f) for f in result["config"]["fractions"]]

    def cell(r):
        return f"{r['nme_mean']:.2f} [{r['nme_ci'][0]:.2f}, {r['nme_ci'][1]:.2f}] n={r['seeds']}" if r else "-"
    lines = [f"{'method':>16} | " + " | ".join(f"{'NME % at ' + format(100 * f, 'g') + ' %':>28}" for f in fracs)]
    for method, r in result["methods"].items():
        lines.append(f"{method:>16} | " + " | ".join(f"{cell(r.get(str(f))):>28}" for f in fracs))
    lines.append(f"init {result['config']['init']}; mean shape {result['mean_shape_nme']:.2f} % NME; "
                 f"{result['test']['faces']} held-out faces; pool {result['pool']['faces']} faces, "
                 f"{result['pool']['kept']} after de-duplication")
    for m in result.get("same_as_random", []):
        lines.append(f"{m}: every subset it chose is random's (the pool's near-duplicates were in none), "
                     f"so its row is random's")
    for f, v in result["verdict"].items():
        line = f"at {100 * float(f):g} %: best {v['best']} ({v['nme']:.2f})"
        if "minus_random" in v:
            line += (f", {v['minus_random']:+.2f} against random; intervals "
                     + ("overlap: not told apart" if v["overlaps_random"] else "apart"))
        lines.append(line)
    return "\n".join(lines)
