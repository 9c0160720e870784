"""Upload-date windows: how the crawler gets past Flickr's 4,000-results-per-query cap.

A search window is an inclusive range of unix seconds [lo, hi] (Flickr's min/max_upload_date
bounds are inclusive). A window whose `total` exceeds the cap is split into equal-time parts,
enough that each is expected to hold about `fill`·cap results, so a 12,000-photo window costs
one probe and then its parts' pages, instead of a ladder of halvings. Parts that still exceed
the cap (bursty upload days) are split again. The split is a pure function of (window, parts),
so a resumed run rebuilds the same children from the recorded part count.
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass


def parse_date(value: str | int | float) -> int:
    """Unix seconds from a unix timestamp or 'YYYY-MM-DD[ HH:MM:SS]' (UTC), as Flickr accepts."""
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return int(float(text))
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return calendar.timegm(dt.datetime.strptime(text, fmt).timetuple())
        except ValueError:
            continue
    raise ValueError(f"not a date: {value!r} (use YYYY-MM-DD, 'YYYY-MM-DD HH:MM:SS' or unix seconds)")


@dataclass(frozen=True, order=True)
class Window:
    lo: int  # first second, inclusive
    hi: int  # last second, inclusive

    @property
    def span(self) -> int:
        return self.hi - self.lo + 1

    def split(self, parts: int) -> list["Window"]:
        """`parts` contiguous, non-overlapping children covering exactly this window."""
        parts = max(1, min(int(parts), self.span))
        bounds = [self.lo + (self.span * i) // parts for i in range(parts + 1)]
        return [Window(bounds[i], bounds[i + 1] - 1) for i in range(parts)]

    def __str__(self) -> str:
        fmt = "%Y-%m-%d %H:%M:%S"
        utc = dt.timezone.utc
        return (f"[{dt.datetime.fromtimestamp(self.lo, utc).strftime(fmt)} .. "
                f"{dt.datetime.fromtimestamp(self.hi, utc).strftime(fmt)}]")


def parts_needed(total: int, cap: int, fill: float = 0.75) -> int:
    """How many equal-time parts to cut a window of `total` results into (at least 2)."""
    return max(2, math.ceil(total / (cap * fill)))


def pages_needed(total: int, cap: int, per_page: int) -> int:
    """Pages that reach every result of a window (at most the cap); an empty window is 1 call."""
    return max(1, math.ceil(min(total, cap) / per_page))


def uncovered(root: Window, covered: list[Window]) -> list[Window]:
    """The parts of `root` that no window in `covered` contains, in date order.

    A re-run whose date range differs from the last one (the default end date is "today")
    crawls only these gaps — tomorrow's re-run costs a call or two, not the whole range again."""
    gaps, start = [], root.lo
    for w in sorted(covered):
        if w.hi < start or w.lo > root.hi:
            continue
        if w.lo > start:
            gaps.append(Window(start, w.lo - 1))
        start = max(start, w.hi + 1)
        if start > root.hi:
            break
    if start <= root.hi:
        gaps.append(Window(start, root.hi))
    return gaps
