"""Retries with jittered exponential backoff, for any flaky remote call (API pages, downloads).

The caller says which exceptions are worth retrying (a predicate), so one helper serves the
crawler (Flickr codes 105/201, HTTP 5xx, timeouts) and the downloader (its own HTTP errors).
Jitter spreads the retries of many threads so they do not hit a recovering server in lockstep;
the rng is injectable so tests are deterministic, and delays are configurable so tests are fast.
"""
from __future__ import annotations

import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class RetryPolicy:
    attempts: int = 6           # total tries, the first included
    base_delay: float = 1.0     # seconds before the first retry (before jitter)
    max_delay: float = 60.0     # cap on any single wait


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable error; `last` is the final one."""

    def __init__(self, attempts: int, last: BaseException):
        super().__init__(f"gave up after {attempts} attempts: {last}")
        self.attempts = attempts
        self.last = last


def backoff_delays(attempts: int, base_delay: float, max_delay: float,
                   rng: random.Random | None = None) -> Iterator[float]:
    """The waits between `attempts` tries: base·2^i capped at max, times a jitter in [0.5, 1)."""
    rng = rng or random.Random()
    for i in range(max(0, attempts - 1)):
        yield min(max_delay, base_delay * (2 ** i)) * (0.5 + 0.5 * rng.random())


def retry_call(fn: Callable[[], T], retryable: Callable[[BaseException], bool],
               attempts: int = 6, base_delay: float = 1.0, max_delay: float = 60.0,
               rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep,
               on_retry: Callable[[int, BaseException, float], None] | None = None,
               what: str = "call") -> T:
    """Call `fn()` until it succeeds, a non-retryable error escapes, or attempts run out.

    Non-retryable exceptions propagate unchanged at once. After the last failed attempt a
    `RetriesExhausted` (carrying the last error) is raised, so callers can tell "gave up"
    from "fatal".
    """
    delays = backoff_delays(attempts, base_delay, max_delay, rng)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - the predicate decides
            if not retryable(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise RetriesExhausted(attempt, exc) from exc
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            else:
                log.debug("%s failed (attempt %d/%d: %s); retrying in %.2fs",
                          what, attempt, attempts, exc, delay)
            sleep(delay)


def retrying(retryable: Callable[[BaseException], bool], attempts: int = 6,
             base_delay: float = 1.0, max_delay: float = 60.0,
             rng: random.Random | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorator form of `retry_call`."""
    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> T:
            return retry_call(lambda: fn(*args, **kwargs), retryable, attempts, base_delay,
                              max_delay, rng, what=fn.__name__)
        return wrapper
    return decorate
