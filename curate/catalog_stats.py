"""What a catalog holds: photos by status, licence, query, source and owner; failures and skips
by reason; crawl windows by status.

`facesift catalog stats` prints `report(collect(...))`, or the collected numbers as JSON; with
`--reasons` a few example photos (id and message) of each reason, so a count can be looked into.
"""
from __future__ import annotations

from pathlib import Path

from facesift.common.licenses import LICENSE_NAMES
from facesift.curate.reasons import format_counts


def collect(catalog, examples: int = 0) -> dict:
    """Every count of an open `Catalog`; owners and queries largest first; `examples` > 0 adds
    that many example photos per failure / skip reason."""
    windows = catalog.windows()
    by_window: dict[str, int] = {}
    for w in windows:
        by_window[w["status"]] = by_window.get(w["status"], 0) + 1
    return {"photos": catalog.count(), "status": catalog.counts_by("status"),
            "license": catalog.counts_by("license"), "query": catalog.counts_by("query"),
            "source": catalog.counts_by("source"), "owners": catalog.counts_by("owner"),
            "reasons": catalog.reason_counts(),
            **({"reason_examples": catalog.reason_examples(examples)} if examples > 0 else {}),
            "windows": by_window,
            "failed_windows": [{k: w[k] for k in ("query", "min_date", "max_date", "error")}
                               for w in windows if w["status"] == "failed"]}


def top_owners(stats: dict, top: int) -> dict:
    return dict(list(stats["owners"].items())[:top])


def as_json(stats: dict, top: int) -> dict:
    """The collected counts with only the `top` owners, and how many owners there are."""
    return {**stats, "owners": top_owners(stats, top), "n_owners": len(stats["owners"])}


def _table(title: str, counts: dict, total: int, names: dict | None = None) -> list[str]:
    lines = [f"{title}:"]
    for key, n in counts.items():
        label = str(key) if key is not None else "-"
        if names and key in names:
            label = f"{key} {names[key]}"
        share = f"{100 * n / total:5.1f}%" if total else ""
        lines.append(f"  {label:<40} {n:>9}  {share}")
    return lines


def report(stats: dict, path: str | Path, top: int) -> str:
    """The tables `facesift catalog stats` prints."""
    owners = top_owners(stats, top)
    total = stats["photos"]
    lines = [f"catalog {path}: {total} photos, {len(stats['owners'])} owners"]
    lines += _table("by status", stats["status"], total)
    lines += _table("by licence", stats["license"], total, LICENSE_NAMES)
    lines += _table("by query", stats["query"], total)
    if set(stats["source"]) - {"flickr"}:
        lines += _table("by source", stats["source"], total)
    for status, by_reason in stats.get("reasons", {}).items():
        lines.append(f"{status}: {format_counts(sum(by_reason.values()), by_reason)}")
        examples = stats.get("reason_examples", {}).get(status, {})
        for reason in (r for r in by_reason if r in examples):
            lines.append(f"  {reason} ({by_reason[reason]}):")
            lines += [f"    {e['id']}: {e['error']}" for e in examples[reason]]
    lines += _table(f"top {len(owners)} owners", owners, total)
    if stats["windows"]:
        lines.append("crawl windows: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["windows"].items())))
    for w in stats["failed_windows"]:
        lines.append(f"  unfinished: {w['query']!r} {w['min_date']}..{w['max_date']}: {w['error']}")
    return "\n".join(lines)
