"""`report.html`: one self-contained page (inline base64 PNG/JPEG, no external files or fetches).

Plots via matplotlib's Agg backend; thumbnails are read back from the shards (only the shards
holding the rows shown are opened). The page's own script checks that every image decoded
and writes the result into `<body data-status=...>` and a status line, which is what the
browser test reads.
"""
from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
from PIL import Image


SECTIONS = ("summary", "calibration", "threshold-sweep", "nn-similarity", "clusters", "breakdowns",
            "duplicate-groups", "outliers")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#f7f7fa;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.group{margin:10px 0;padding:6px;border:1px solid #eee;border-radius:6px}
.group img,.outliers img{margin:2px;border:2px solid transparent;vertical-align:middle}
.group img.keep{border-color:#2a2} .muted{color:#777;font-size:12px} #status{font-size:12px;color:#777}
"""

_SCRIPT = """
function checkImages(){
  var imgs=document.images, broken=0;
  for(var i=0;i<imgs.length;i++){ if(!imgs[i].complete||imgs[i].naturalWidth===0){broken++;imgs[i].setAttribute('data-broken','1');} }
  var missing=[]; %s.forEach(function(id){ if(!document.getElementById(id)) missing.push(id); });
  var ok = broken===0 && missing.length===0;
  document.body.setAttribute('data-status', ok ? 'ok' : 'broken');
  document.getElementById('status').textContent = 'status: ' + (ok ? 'ok' : 'broken') + ' images=' + imgs.length +
      ' broken=' + broken + ' missing_sections=' + missing.join('|');
}
window.addEventListener('load', checkImages);
""" % json.dumps(list(SECTIONS))


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(src: str, alt: str, cls: str = "", title: str = "") -> str:
    return (f'<img src="{src}" alt="{html.escape(alt)}" title="{html.escape(title or alt)}"'
            + (f' class="{cls}"' if cls else "") + ">")


def plot_sweep(sweep: list[dict], threshold: float) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["threshold"] for r in sweep]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(t, [r["unique_fraction"] for r in sweep], "o-", label="unique fraction")
    ax.plot(t, [r["duplicate_rate"] for r in sweep], "s-", label="duplicate rate")
    ax.axvline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("cosine similarity threshold")
    ax.set_ylim(-0.02, 1.02)
    ax2 = ax.twinx()
    ax2.plot(t, [r["groups"] for r in sweep], "^:", color="tab:green", label="groups")
    ax2.set_ylabel("duplicate groups")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="center left")
    ax.set_title("Redundancy vs threshold")
    return _png(fig)


def plot_nn_hist(nn_sims: np.ndarray, threshold: float) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    finite = nn_sims[np.isfinite(nn_sims)]
    ax.hist(finite, bins=60, color="tab:blue", alpha=0.8)
    ax.axvline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("cosine similarity to the nearest other image")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("Nearest-neighbour similarity")
    return _png(fig)


def plot_calibration(hist: dict, threshold: float | None, xlabel: str, title: str,
                     labels: tuple[str, str] = ("known copies vs their original", "nearest other image")) -> str:
    """Both calibration distributions on shared bins, each as a share of its own count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    edges = np.asarray(hist.get("edges", []), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if len(edges) >= 2:
        for counts, label, colour in ((hist["copy"], labels[0], "tab:green"), (hist["nearest"], labels[1], "tab:blue")):
            c = np.asarray(counts, dtype=np.float64)
            ax.stairs(c / max(c.sum(), 1), edges, fill=True, alpha=0.45, color=colour, label=f"{label} ({int(c.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(fig)


def _calibration_section(summary: dict) -> str:
    """Histograms and the chosen thresholds with their expected precision / recall."""
    cal = summary.get("calibration") or {}
    ver = summary.get("verification") or {}
    parts = ["<section id='calibration'><h2>Calibration</h2>"]
    if cal.get("skipped"):
        parts.append(f"<p class='muted'>no calibration: {html.escape(str(cal['skipped']))}</p>")
    else:
        parts.append(f"<p>{cal.get('copies', 0)} known copies of {cal.get('sample', 0)} sampled images "
                     f"({html.escape(', '.join(cal.get('families', [])))}), embedded like the dataset. First stage: "
                     f"{html.escape(str(cal.get('first_stage')))}; "
                     f"{'then every candidate pair is verified at' if cal.get('verified') else 'final, at'} an "
                     f"estimated precision of {cal.get('target_precision')}. Estimated precision = estimated "
                     "duplicate pairs × share of copies above ÷ pairs above (verification: 1 − estimated false "
                     "pairs ÷ candidate pairs above).</p>")
    rows = []
    stages = [("embedding (cosine)", cal.get("emb"), "used", "cosine similarity"),
              ("hash (Hamming)", cal.get("hamming"), "used", "Hamming distance"),
              ("verification (aligned thumbnails)", ver if ver.get("enabled") else None, "threshold",
               "verification score")]
    plots = []
    for name, st, key, xlabel in stages:
        if not st:
            continue
        base = (st.get("estimated_duplicate_pairs") if "estimated_duplicate_pairs" in st
                else f"{st.get('estimated_false_pairs', float('nan')):.1f} false" if "estimated_false_pairs" in st
                else "")
        rows.append([name, st.get(key), st.get("source", "?"), base,
                     st.get("expected_precision", float("nan")), st.get("expected_recall", float("nan")),
                     ", ".join(f"{k} {v:.2f}" for k, v in (st.get("per_family_recall") or {}).items())])
        if st.get("histogram"):
            labels = (("known copies vs their original", "candidate pairs") if key == "threshold"
                      else ("known copies vs their original", "nearest other image"))
            plots.append(_img(plot_calibration(st["histogram"], st.get(key), xlabel, f"Calibration: {name}", labels),
                              f"calibration histogram: {name}"))
    if rows:
        parts.append(_table(["stage", "threshold", "source", "estimated duplicate pairs (base rate)",
                             "expected precision", "expected recall", "copies found, by family"], rows))
    if ver.get("enabled"):
        parts.append(f"<p>Verification kept {ver.get('kept', 0)} of {ver.get('candidates', 0)} candidate pairs"
                     + (f"; expected recall of both stages together {ver['expected_recall_overall']:.3f}"
                        if "expected_recall_overall" in ver else "") + ".</p>")
    else:
        parts.append(f"<p class='muted'>pairs not verified ({html.escape(str(ver.get('reason', 'off')))})</p>")
    parts.extend(plots)
    parts.append("</section>")
    return "".join(parts)


def plot_clusters(sizes: list[int], effective: float) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    s = np.sort(np.asarray(sizes))[::-1]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.fill_between(np.arange(len(s)), s, step="mid", color="tab:purple", alpha=0.8)  # one artist, any k
    ax.set_xlabel("cluster (sorted by size)")
    ax.set_ylabel("images")
    ax.set_title(f"k-means cluster sizes (k={len(s)}, effective number {effective:.1f})")
    return _png(fig)


def thumbnails(info: dict, rows: list[int], size: int) -> dict[int, str]:
    """row -> data URI of a JPEG thumbnail, reading only the shards that hold those rows."""
    from facesift.analysis.rowimages import decode_rgb, read_rows

    def small(data: bytes) -> Image.Image:
        im = decode_rgb(data)
        im.thumbnail((size, size))
        return im
    out: dict[int, str] = {}
    for row, im in read_rows(info, rows, decode=small).items():
        if im is None:
            im = Image.new("RGB", (size, size), (200, 60, 60))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        out[row] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return out


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def render(summary: dict, sweep: list[dict], nn_sims: np.ndarray, cluster_sizes: list[int],
           groups: list[dict], keys: list[str], outlier_rows: list[int], outlier_sims: list[float],
           thumbs: dict[int, str], cfg) -> str:
    """The whole page as a string."""
    t = summary["threshold"]
    cards = [("images", summary["rows"]), ("duplicates", summary["duplicates"]),
             ("unique fraction", f"{summary['unique_fraction']:.3f}"), ("groups", summary["groups"]),
             ("effective clusters", f"{summary['clusters']['effective_clusters']:.1f} / {summary['clusters']['clusters']}"),
             ("median NN sim", f"{summary['nn_similarity'].get('p50', float('nan')):.3f}")]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>facesift redundancy report</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>Redundancy report</h1>",
             f"<p class='muted'>embeddings: {html.escape(summary['embedder'])} · duplicates by "
             f"{html.escape(summary['by'])} at cosine ≥ {t} ({html.escape(str(summary.get('threshold_source')))})"
             + (f" / Hamming ≤ {summary['hamming']}" if "hash" in summary["by"] else "")
             + (f" · verified at score ≥ {summary['verification'].get('threshold')}"
                if (summary.get("verification") or {}).get("enabled") else " · not verified")
             + f" · grouping {html.escape(summary['grouping'])}, keep {html.escape(summary['keep'])}"
             + f" · index {html.escape(str(summary['search'].get('index')))}</p>",
             "<section id='summary'><h2>Summary</h2><div class='cards'>"
             + "".join(f"<div class='card'>{html.escape(k)}<b>{html.escape(str(v))}</b></div>" for k, v in cards)
             + "</div></section>",
             _calibration_section(summary),
             "<section id='threshold-sweep'><h2>Threshold sweep</h2>"
             + _img(plot_sweep(sweep, t), "threshold sweep")
             + _table(["threshold", "pairs", "groups", "duplicates", "unique fraction", "from", "saturated rows"],
                      [[r["threshold"], r["pairs"], r["groups"], r["duplicates"], r["unique_fraction"], r["source"],
                        r["saturated_rows"]] for r in sweep])
             + "<p class='muted'>'exact': every pair found; 'knn': from the k-NN graph (a row with k neighbours "
               "all above the threshold may have more — see saturated rows).</p></section>",
             "<section id='nn-similarity'><h2>Nearest-neighbour similarity</h2>"
             + _img(plot_nn_hist(nn_sims, t), "nearest-neighbour similarity histogram")
             + _table(list(summary["nn_similarity"].keys()), [list(summary["nn_similarity"].values())])
             + "</section>",
             "<section id='clusters'><h2>Clusters</h2>"
             + _img(plot_clusters(cluster_sizes, summary["clusters"]["effective_clusters"]), "cluster sizes")
             + "<p>Effective number of clusters = exp(entropy of the cluster-size distribution): "
               f"{summary['clusters']['effective_clusters']:.1f} of {summary['clusters']['clusters']} "
               f"({summary['clusters']['effective_fraction']:.2f}).</p></section>"]
    bd = ["<section id='breakdowns'><h2>Breakdowns</h2>"]
    for field, b in summary["breakdowns"].items():
        if not b.get("known"):
            bd.append(f"<h3>by {html.escape(field)}</h3><p class='muted'>no {html.escape(field)} in the metadata</p>")
            continue
        bd.append(f"<h3>by {html.escape(field)}</h3><p>{b['distinct']} distinct; {b['pairs_within_same']} of "
                  f"{b['pairs']} duplicate pairs ({b['within_share']:.1%}) are within one {html.escape(field)}.</p>")
        bd.append(_table([field, "images", "duplicates", "duplicate rate"],
                         [[r["value"], r["images"], r["duplicates"], r["duplicate_rate"]] for r in b["top"]]))
    parts.append("".join(bd) + "</section>")
    gal = ["<section id='duplicate-groups'><h2>Largest duplicate groups</h2>"]
    if not groups:
        gal.append("<p class='muted'>no duplicate groups at this threshold</p>")
    for n_g, g in enumerate(groups[:cfg.gallery_groups]):
        shown = [g["keep"]] + [r for r in g["rows"] if r != g["keep"]][:cfg.gallery_members - 1]
        imgs = "".join(_img(thumbs[r], keys[r], "keep" if r == g["keep"] else "",
                            f"{keys[r]}{' (kept)' if r == g['keep'] else ''}") for r in shown if r in thumbs)
        gal.append(f"<div class='group'><span class='muted'>group {n_g + 1}: {len(g['rows'])} images, kept "
                   f"{html.escape(keys[g['keep']])}</span><br>{imgs}</div>")
    parts.append("".join(gal) + "</section>")
    out = ["<section id='outliers' class='outliers'><h2>Outliers</h2>"
           "<p class='muted'>Images least similar to their nearest neighbour: unusual faces, bad crops or "
           "detector false positives.</p>"]
    out.extend(_img(thumbs[r], keys[r], "", f"{keys[r]} (NN sim {s:.3f})")
               for r, s in zip(outlier_rows, outlier_sims) if r in thumbs)
    parts.append("".join(out) + "</section>")
    parts.append(f"<p id='status'>status: pending</p><script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)
