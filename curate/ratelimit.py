"""A token bucket shared by every thread that calls one API key.

Flickr allows about 3,600 calls per hour per key. Threads overlap network latency, but they
all draw from this one bucket, so adding threads never raises the call rate above the limit.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    """`rate_per_hour` tokens refill continuously; at most `burst` may be saved up."""

    def __init__(self, rate_per_hour: float, burst: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate_per_hour <= 0:
            raise ValueError(f"rate must be > 0 calls/hour, got {rate_per_hour}")
        self.rate = rate_per_hour / 3600.0  # tokens per second
        self.burst = max(1.0, float(burst))
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def try_acquire(self) -> float:
        """Take a token if one is there (returns 0), else the seconds until one will be."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def acquire(self) -> None:
        """Block until a token is available, then take it."""
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return
            self._sleep(wait)
