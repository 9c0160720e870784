"""The redundancy curve: results of a grid as a table (paper Tables 5/7), a plot, and an index.

Table: one block per (task, dataset, adaptation, distillation); rows init x fraction (largest
first), columns the metrics as mean ± std over seeds.

Redundancy index of a dataset for an init: the smallest fraction of the training labels whose
metric stays within `tolerance` (relative, default 5%) of the full-data metric. Going down the
fractions from the largest, the first one outside the band and its neighbour above are joined
by a straight line in log(fraction) and the crossing of the band's edge is the index; if every
fraction is inside, the index is "≤ the smallest fraction tried". Its uncertainty comes from a
bootstrap over seeds (each fraction's seeds resampled with replacement, the full-data reference
included): the 16th–84th percentile range and the standard deviation of log10(index).
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def unusable(res: object) -> str | None:
    """Why a result file cannot enter the table (None when it can).

    Results come from disk: an older version, a hand edit or a run that diverged may have left
    a missing field, a fraction of 0 or a NaN headline metric, and one such file must not take
    the whole table down (or, worse, enter a mean as NaN).
    """
    if not isinstance(res, dict):
        return "not a JSON object"
    missing = [k for k in ("init", "fraction", "metrics") if k not in res]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(res["init"], str) or not isinstance(res["metrics"], dict):
        return "init must be a string and metrics an object"
    fraction = res["fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        return f"fraction {fraction!r} is not in (0, 1]"
    primary = res.get("primary_metric") or (sorted(res["metrics"])[0] if res["metrics"] else None)
    value = res["metrics"].get(primary) if primary else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"headline metric {primary!r} is {value!r}, not a finite number"
    return None


def load_results(path: str | Path, skipped: list[str] | None = None,
                 superseded: list[str] | None = None) -> list[dict]:
    """Every usable result JSON under `path` (a results folder, a grid's output folder, or one
    file); each file that cannot be used is named in the log and, with `skipped`, listed there;
    each older result of a run that has a newer one, likewise in `superseded`."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.json"))
    out = []
    for f in files:
        if f.name.startswith(".") or "search" in f.parts[len(path.parts):-1]:
            continue
        try:
            res = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            why = f"unreadable ({exc})"
        else:
            looks_like_one = isinstance(res, dict) and bool({"init", "fraction", "metrics"} & set(res))
            if not looks_like_one and f.parent.name != "results":
                continue  # another JSON beside the results (curve.json, a config): not a result
            why = unusable(res)
        if why:
            log.warning("%s: skipped, %s", f, why)
            if skipped is not None:
                skipped.append(f"{f}: {why}")
            continue
        out.append((f, res))
    out = _newest_per_run(out, superseded)
    if not out:
        raise FileNotFoundError(f"{path}: no usable fine-tuning results (results/<hash>.json)")
    return out


def _newest_per_run(found: list[tuple[Path, dict]], superseded: list[str] | None) -> list[dict]:
    """One result per (task, dataset, adaptation, distillation, init, fraction, seed): a folder
    that also keeps the runs of earlier settings (the grid never deletes a result) would
    otherwise count them as extra seeds. The newest file wins; the others are named and counted
    (not an error: re-running a changed recipe into its old folder is how a grid is used)."""
    newest: dict[tuple, tuple[float, Path, dict]] = {}
    for f, res in found:
        run = (*_group_key(res), res["init"], float(res["fraction"]), res.get("seed"))
        mtime = f.stat().st_mtime if f.exists() else 0.0
        old = newest.get(run)
        if old is None or (mtime, str(f)) > (old[0], str(old[1])):
            newest[run], loser = (mtime, f, res), old
        else:
            loser = (mtime, f, res)
        if loser is not None:
            why = f"superseded by {newest[run][1].name}: the same init, fraction and seed under other settings"
            log.warning("%s: not counted, %s", loser[1], why)
            if superseded is not None:
                superseded.append(f"{loser[1]}: {why}")
    return [res for _, _, res in sorted(newest.values(), key=lambda v: str(v[1]))]


def _group_key(r: dict) -> tuple:
    return (r.get("task", "?"), r.get("dataset", "?"), r.get("adapt", "full"), int(r.get("distill") or 0))


def _band_ok(value: float, ref: float, tol: float, lower_is_better: bool) -> bool:
    margin = tol * abs(ref)
    return value <= ref + margin if lower_is_better else value >= ref - margin


def point_index(fractions: list[float], values: list[float], lower_is_better: bool,
                tolerance: float = 0.05) -> tuple[float, bool]:
    """(index, bounded) from per-fraction metric values; bounded=False means "≤ smallest"."""
    order = sorted(range(len(fractions)), key=lambda i: -fractions[i])
    f = [fractions[i] for i in order]
    v = [values[i] for i in order]
    ref = v[0]
    edge = ref + tolerance * abs(ref) if lower_is_better else ref - tolerance * abs(ref)
    for i in range(1, len(f)):
        if _band_ok(v[i], ref, tolerance, lower_is_better):
            continue
        lo, hi = math.log(f[i]), math.log(f[i - 1])
        t = (edge - v[i - 1]) / (v[i] - v[i - 1]) if v[i] != v[i - 1] else 0.0
        return float(math.exp(hi + t * (lo - hi))), True
    return float(f[-1]), False


def redundancy_index(per_fraction: dict[float, list[float]], lower_is_better: bool, tolerance: float = 0.05,
                     n_boot: int = 2000, seed: int = 0) -> dict:
    """Index from seed means, and its bootstrap spread over seeds."""
    fr = sorted(per_fraction, reverse=True)
    if len(fr) < 2:
        raise ValueError("the redundancy index needs at least two fractions")
    means = [float(np.mean(per_fraction[f])) for f in fr]
    index, bounded = point_index(fr, means, lower_is_better, tolerance)
    out = {"index": index, "bounded": bounded, "tolerance": tolerance, "reference": means[0],
           "seeds": min(len(per_fraction[f]) for f in fr)}
    if out["seeds"] > 1:
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            vals = [float(np.mean(rng.choice(per_fraction[f], len(per_fraction[f]), replace=True))) for f in fr]
            boots.append(point_index(fr, vals, lower_is_better, tolerance)[0])
        logs = np.log10(boots)
        out["ci68"] = [float(np.percentile(boots, 16)), float(np.percentile(boots, 84))]
        out["log10_std"] = float(logs.std())
    else:
        out["ci68"], out["log10_std"] = None, None
    return out


def summarise(results: list[dict], metric: str | None = None, tolerance: float = 0.05) -> list[dict]:
    """One block per group: {group, metric, lower_is_better, rows: [...], index: {init: ...}}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[_group_key(r)].append(r)
    blocks = []
    for gkey, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        primary = metric or rs[0].get("primary_metric") or sorted(rs[0]["metrics"])[0]
        lower = rs[0].get("lower_is_better") if metric is None else None
        if lower is None:
            from facesift.finetune.metrics import lower_is_better
            lower = lower_is_better(primary)
        names = [primary] + sorted({k for r in rs for k, v in r["metrics"].items()
                                    if k != primary and isinstance(v, (int, float))})
        cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        inits = []
        for r in rs:
            if r["init"] not in inits:
                inits.append(r["init"])
            for name in names:
                v = r["metrics"].get(name)
                if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                    cells[(r["init"], float(r["fraction"]))][name].append(float(v))
        inits.sort(key=lambda i: (i != "scratch", i))    # scratch first, like the paper's tables
        rows = []
        for init in inits:
            for frac in sorted({f for i, f in cells if i == init}, reverse=True):
                c = cells[(init, frac)]
                rows.append({"init": init, "fraction": frac, "seeds": len(c.get(primary, [])),
                             "metrics": {n: (float(np.mean(c[n])), float(np.std(c[n])) if len(c[n]) > 1 else 0.0)
                                         for n in names if c.get(n)},
                             "values": {n: c[n] for n in names if c.get(n)}})
        index = {}
        for init in inits:
            per = {row["fraction"]: row["values"][primary] for row in rows
                   if row["init"] == init and primary in row["values"]}
            if len(per) >= 2:
                index[init] = redundancy_index(per, lower, tolerance)
        base = next((r["baseline"]["mean_shape"].get(primary) for r in rs
                     if isinstance(r.get("baseline"), dict) and isinstance(r["baseline"].get("mean_shape"), dict)), None)
        blocks.append({"group": dict(zip(("task", "dataset", "adapt", "distill"), gkey)), "metric": primary,
                       "lower_is_better": lower, "columns": names, "rows": rows, "index": index,
                       "baseline": base if isinstance(base, (int, float)) else None})
    return blocks


def _fmt(mean: float, std: float, seeds: int) -> str:
    digits = 2 if abs(mean) >= 1 else 3
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def format_index(ix: dict) -> str:
    text = f"{'≤ ' if not ix['bounded'] else ''}{100 * ix['index']:.3g}%"
    if ix.get("ci68"):
        text += f" (68% CI {100 * ix['ci68'][0]:.3g}–{100 * ix['ci68'][1]:.3g}%, ±{ix['log10_std']:.2f} log10)"
    else:
        text += " (1 seed: no uncertainty)"
    return text


def verdict(block: dict) -> list[str]:
    """What a reader should conclude: each init against the mean-shape baseline, and each
    pretrained init against scratch per fraction (the paper's comparison)."""
    metric, lower, base = block["metric"], block["lower_is_better"], block.get("baseline")
    means = {(r["init"], r["fraction"]): r["metrics"][metric][0] for r in block["rows"] if metric in r["metrics"]}
    inits = list(dict.fromkeys(i for i, _ in means))
    lines = []
    if base is not None:
        lines.append(f"mean-shape baseline (the training pool's average face for every test face): {metric} {base:.2f}")
        for init in inits:
            worse = [f for (i, f), m in means.items() if i == init and (m >= base if lower else m <= base)]
            if worse:
                lines.append(f"  {init}: does NOT beat the mean shape at {', '.join(f'{100 * f:g}%' for f in sorted(worse, reverse=True))}"
                             " - it has not learned to localise there (more steps, a larger image_size, "
                             "or a pretrained init)")
            else:
                lines.append(f"  {init}: beats the mean shape at every fraction")
    if "scratch" in inits:
        for init in (i for i in inits if i != "scratch"):
            ratios = [(f, means[(init, f)] / means[("scratch", f)]) for (i, f) in means
                      if i == init and ("scratch", f) in means and means[("scratch", f)]]
            if ratios:
                better = "< 1: the init helps" if lower else "> 1: the init helps"
                lines.append(f"{init} / scratch ({better}): " + ", ".join(
                    f"{r:.2f} at {100 * f:g}%" for f, r in sorted(ratios, reverse=True)))
    return lines


def format_table(blocks: list[dict], max_columns: int = 6) -> str:
    lines = []
    for b in blocks:
        g = b["group"]
        arrow = "↓" if b["lower_is_better"] else "↑"
        lines.append(f"## {g['task']} on {g['dataset']} ({g['adapt']} fine-tune"
                     f"{', self-distillation T=' + str(g['distill']) if g['distill'] else ''}); "
                     f"{b['metric']} {arrow} is the headline metric")
        cols = [c for c in b["columns"] if "[" not in c][:max_columns]
        cols += [c for c in b["columns"] if "[" in c and c.startswith(b["metric"])][:4]
        header = ["data", "init", "seeds"] + cols
        body = []
        for row in b["rows"]:
            cells = [f"{100 * row['fraction']:g}%", row["init"], str(row["seeds"])]
            for c in cols:
                m = row["metrics"].get(c)
                cells.append(_fmt(m[0], m[1], row["seeds"]) if m else "-")
            body.append(cells)
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body)
        lines.extend(verdict(b))
        if b["index"]:
            tol = next(iter(b["index"].values()))["tolerance"]
            lines.append(f"redundancy index ({b['metric']} within {100 * tol:g}% of the full-data value):")
            for init, ix in b["index"].items():
                lines.append(f"  {init}: {format_index(ix)}")
        lines.append("")
    return "\n".join(lines)


def plot(blocks: list[dict], path: str | Path) -> Path:
    """metric vs fraction (log x) per init, mean ± std; dotted lines at the redundancy index."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from facesift.common.atomic import atomic_write

    n = len(blocks)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4), squeeze=False)
    for ax, b in zip(axes[0], blocks):
        for k, init in enumerate(dict.fromkeys(r["init"] for r in b["rows"])):
            rows = sorted((r for r in b["rows"] if r["init"] == init and b["metric"] in r["metrics"]),
                          key=lambda r: r["fraction"])
            xs = [r["fraction"] for r in rows]
            ms = [r["metrics"][b["metric"]][0] for r in rows]
            ss = [r["metrics"][b["metric"]][1] for r in rows]
            line = ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=init)
            ix = b["index"].get(init)
            if ix:
                ax.axvline(ix["index"], color=line[0].get_color(), linestyle=":", alpha=0.8)
        if b.get("baseline") is not None:
            ax.axhline(b["baseline"], color="grey", linestyle="--", label="mean shape")
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training labels")
        ax.set_ylabel(f"{b['metric']} ({'lower' if b['lower_is_better'] else 'higher'} is better)")
        ax.set_title(f"{b['group']['task']}: {Path(str(b['group']['dataset'])).name}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path
