"""What the local Flickr-compatible server serves: its catalogue, its faults, where it listens.

Apart from the server (flickr_sandbox.py) and the catalogue builder (sandbox_photos.py), which
both read it, so that neither has to import the other's module for its options.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FAULT_KINDS = ("105", "201", "500", "503", "drop", "slow")


@dataclass
class SandboxConfig:
    photos: str = "data/sample/photos"            # folder of real images, reused under many ids
    queries: dict[str, int] = field(default_factory=lambda: {"faces": 300})  # keyword -> matches
    unrelated: int = 0                            # photos matching none of the keywords
    overlap: float = 0.1                          # share of each later keyword's photos that also match an earlier one
    seed: int = 0
    min_date: str = "2010-01-01"                  # upload dates spread over [min_date, max_date]
    max_date: str = "2024-12-31"
    no_cv_rate: float = 0.03                      # photos tagged with the `no_cv` opt-out
    no_url_c_rate: float = 0.05                   # photos without an 800 px size (client must fall back)
    burst_share: float = 0.3                      # photos uploaded in bursts by a few owners
    tie_sizes: tuple[int, int] = (5, 20)          # a burst comes in runs of this many uploads in one second; (1, 1): none
    stable_ties: bool = False                     # False: same-second ties come back in a per-request order, like Flickr
    never_returned: list[str] = field(default_factory=list)  # ids counted in `total` but never served (a tie never whole)
    bad_key: str = "bad-key"                      # this API key gets code 100; any other key works
    ignore_license: bool = False                  # return every licence, like a misbehaving server
    variants: bool = True                         # per-id image variants (False: exact source bytes)
    slow_seconds: float = 10.0                    # delay of /bad/slow.jpg
    fault_rate: float = 0.0                       # share of API calls that fail ...
    fault_kinds: list[str] = field(default_factory=lambda: list(FAULT_KINDS))  # ... in these ways
    slow_api_seconds: float = 2.0                 # delay of a "slow" API fault
    cap: int = 4000                               # results a single query can reach
    max_per_page: int = 500
    host: str = "127.0.0.1"
    port: int = 0                                 # 0: a free port
