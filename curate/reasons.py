"""Why a photo was skipped or failed: a small fixed vocabulary of reason categories.

The catalog's `error` column keeps the full message (URL, status, byte counts ...), which is
good for one photo and useless for a million: people need "how many, and of what kind". So
every place that fails a photo names a category when it raises (`SkipPhoto(message, reason)`),
the category is stored beside the message (the `reason` column), and the summary line,
stats.json and `facesift catalog stats` count by it. Catalogs written before the column existed
(or rows written by code that passes no category) are read through `classify`, which maps the
messages this code has ever produced to their category, anything else to `other`.
"""
from __future__ import annotations

import re

TRUNCATED = "truncated"                # body or file shorter than its header says
NOT_AN_IMAGE = "not an image"          # HTML error page, text, unknown magic bytes
EMPTY = "empty"                        # zero bytes
TOO_MANY_PIXELS = "too many pixels"    # the decompression-bomb cap (download.max_pixels)
TOO_SMALL = "too small"                # a side below download.min_side
TOO_LARGE = "too large"                # more bytes than download.max_bytes
CANNOT_DECODE = "cannot decode"        # corrupt data, an image mode or codec Pillow cannot read
HTTP_ERROR = "http error"              # 4xx, too many redirects
SERVER_ERROR = "server error"          # 429 / 5xx, still failing after the retries
TIMEOUT = "timeout"
CONNECTION = "connection error"
BAD_URL = "bad url"                    # no URL, unknown scheme, unparsable
UNREADABLE = "unreadable file"         # a local file that cannot be read (permissions, gone)
PROCESSING = "processing error"        # detect / align / encode failed on this one photo
DUPLICATE = "exact duplicate"          # same bytes as a photo already curated (status skipped)
CHANGED = "changed or removed"         # a listed file whose bytes changed or that is gone (skipped)
OTHER = "other"                        # anything else (an unforeseen library error, old free text)

REASONS = (TRUNCATED, NOT_AN_IMAGE, EMPTY, TOO_MANY_PIXELS, TOO_SMALL, TOO_LARGE, CANNOT_DECODE,
           HTTP_ERROR, SERVER_ERROR, TIMEOUT, CONNECTION, BAD_URL, UNREADABLE, PROCESSING,
           DUPLICATE, CHANGED, OTHER)

# (pattern on the message, category), first match wins: the messages curate writes, old and new
_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"^empty( body| file)?\b", EMPTY),
    (r"^not an image\b", NOT_AN_IMAGE),
    (r"^too many pixels\b", TOO_MANY_PIXELS),
    (r"^too small\b", TOO_SMALL),
    (r"^too large\b", TOO_LARGE),
    (r"image file is truncated|truncated body|broken data stream", TRUNCATED),
    (r"^cannot decode\b", CANNOT_DECODE),
    (r"^HTTP (429|5\d\d)\b", SERVER_ERROR),
    (r"^HTTP \d+|^more than \d+ redirects", HTTP_ERROR),
    (r"^timeout\b", TIMEOUT),
    (r"^connection error\b", CONNECTION),
    (r"^(bad URL|unsupported URL scheme|no URL)\b", BAD_URL),
    (r"^cannot read\b", UNREADABLE),
    (r"^processing error\b", PROCESSING),
    (r"^exact duplicate of\b", DUPLICATE),
    (r"^no longer in the folder\b", CHANGED),
))


def classify(message: str | None) -> str | None:
    """The category of a stored error message (None for no message); `other` when unknown."""
    if not message:
        return None
    for pattern, reason in _RULES:
        if pattern.search(message):
            return reason
    return OTHER


def checked(reason: str | None, message: str | None) -> str | None:
    """`reason` if it is one of the vocabulary, else the category of `message`."""
    return reason if reason in REASONS else classify(message)


def ranked(by_reason: dict[str, int]) -> dict[str, int]:
    """Reasons largest first, ties in vocabulary order: every listing reads the same on every run."""
    order = {r: i for i, r in enumerate(REASONS)}
    return dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order)), kv[0])))


def format_counts(total: int, by_reason: dict[str, int]) -> str:
    """`4 (truncated 1, not an image 1, ...)`: a status count with its reasons (`ranked`)."""
    if not by_reason:
        return str(total)
    return f"{total} ({', '.join(f'{r} {n}' for r, n in ranked(by_reason).items())})"
