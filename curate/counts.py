"""`RunCounts`: what one curate run did, for its summary line and the `last_run` of stats.json."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from facesift.curate.reasons import format_counts, ranked


def _by_status() -> collections.defaultdict:
    return collections.defaultdict(collections.Counter)


@dataclass
class RunCounts:
    """What happened in this run (the summary line and stats.json)."""
    photos: collections.Counter = field(default_factory=collections.Counter)   # by status
    rejected: collections.Counter = field(default_factory=collections.Counter)  # faces, by filter
    rejected_recorded: collections.Counter = field(default_factory=collections.Counter)  # ... now in the catalog
    reasons: collections.defaultdict = field(default_factory=_by_status)  # {failed|skipped: {reason: photos}}
    faces: int = 0
    recovered: int = 0
    bytes: int = 0
    detect_s: float = 0.0       # summed over detector workers
    detect_workers: int = 0
    detect_loop_s: float = 0.0  # first batch handed to a detector → last detection finished
    input_wait_s: float = 0.0   # the main thread waiting for decoded photos (downloads too slow)

    def detector_busy(self) -> float | None:
        """Share of the detection loop the detector workers spent detecting rather than waiting
        for photos: near 1 means the run is detector-bound, as it should be."""
        span = self.detect_workers * self.detect_loop_s
        return round(min(1.0, self.detect_s / span), 4) if span > 0 else None

    def last_run(self) -> dict:
        """stats.json's `last_run`: where this run's time went."""
        return {"detect_s": round(self.detect_s, 3), "detect_workers": self.detect_workers,
                "detect_loop_s": round(self.detect_loop_s, 3), "input_wait_s": round(self.input_wait_s, 3),
                "detector_busy": self.detector_busy(),
                "reasons": {s: ranked(c) for s, c in sorted(self.reasons.items()) if c}}

    def summary(self) -> dict:
        """The fields of the `curate:` summary line, in order (the CLI adds `out`); failed and
        skipped carry their reasons: `failed=4 (truncated 1, not an image 1, ...)`."""
        busy = self.detector_busy()
        return {"photos": sum(self.photos.values()), "done": self.photos["done"],
                "no_face": self.photos["no_face"],
                "failed": format_counts(self.photos["failed"], self.reasons.get("failed", {})),
                "skipped": format_counts(self.photos["skipped"], self.reasons.get("skipped", {})),
                "faces": self.faces, "recovered": self.recovered,
                **{f"rejected_{k}": v for k, v in sorted(self.rejected.items())},
                **({"detector_busy": busy} if busy is not None else {})}
