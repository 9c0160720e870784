"""Upload-date windows: how the crawler gets past Flickr's 4,000-results-per-query cap.

A search window is an inclusive range of unix seconds [lo, hi] (Flickr's min/max_upload_date
bounds are inclusive). A window whose `total` exceeds the cap is split into equal-time parts,
enough that each is expected to hold about `fill`·cap results, so a 12,000-photo window costs
one probe and then its parts' pages, instead of a ladder of halvings. Parts that still exceed
the cap (bursty upload days) are split again. The split is a pure function of (window, parts),
so a resumed run rebuilds the same children from the recorded part count.

A window is exact when the distinct ids its pages returned reach its reported `total`. Flickr
sorts by upload date, but photos uploaded in the same second come back in an order that can
change between requests, so a page boundary inside such a tie repeats one photo and skips
another; `WindowRead` keeps what the reads of a window returned and what is still missing.
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from dataclasses import dataclass, field


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


Page = list[tuple[str, "int | None"]]  # one page as served: (photo id, dateupload) in order


def page_items(answer: dict) -> Page:
    """(id, dateupload) of every photo on one `flickr.photos.search` answer, in served order."""
    out: Page = []
    for photo in answer["photos"].get("photo") or []:
        try:
            date = int(photo.get("dateupload"))
        except (TypeError, ValueError):
            date = None
        out.append((str(photo["id"]), date))
    return out


def reread_per_page(per_page: int, attempt: int) -> int:
    """The page size of re-read `attempt` (0: the normal read): smaller each time, so page
    boundaries fall at other positions than the reads before; never under half the original."""
    step = max(1, per_page // 10)
    return max(1, per_page // 2, per_page - attempt * step) if attempt else per_page


@dataclass
class WindowRead:
    """What every read of one window has returned so far, and whether that is all of it."""
    window: Window
    total: int                  # the latest reported total, counted before any local filter
    cap: int                    # results one query can reach
    seen: set[str] = field(default_factory=set)
    calls: int = 0              # answered calls spent on this window, re-reads included

    @property
    def expected(self) -> int:
        return min(self.total, self.cap)

    @property
    def missing(self) -> int:
        return max(0, self.expected - len(self.seen))
