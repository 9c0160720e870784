"""Logging set-up shared by every command: one format, secrets scrubbed, a one-line summary.

Secrets (Flickr key and secret) are registered once and replaced by '***' in every record any
logger emits, whatever code formats them: a traceback that prints a request URL cannot leak
them either.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable

_SECRETS: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never appear in a log line (short values are ignored: too many false hits)."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


def scrub(text: str) -> str:
    for value in _SECRETS:
        text = text.replace(value, "***")
    return text


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            record.msg, record.args = scrub(message), None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the object it was when the
    handler was made: a caller that swaps stderr (pytest's capture, a tool that redirects it)
    never leaves the handler writing into a closed stream ("--- Logging error ---")."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbosity: int = 0, logfile: str | None = None) -> None:
    """Root logger to stderr (and optionally a file); -v for DEBUG, -q for WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handlers: list[logging.Handler] = [_StderrHandler()]
    if logfile:
        handlers.append(logging.FileHandler(logfile))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(SecretFilter())
        root.addHandler(h)
    root.setLevel(level)
    # Third-party chatter (faiss logs "Loading faiss with AVX2 support" on every import): warnings
    # only, their INFO lines too at -v (never their DEBUG: PIL's would log every PNG chunk).
    quiet = logging.INFO if verbosity > 0 else logging.WARNING
    for noisy in ("urllib3", "PIL", "matplotlib", "flickrapi", "requests_oauthlib", "oauthlib", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, quiet))


def summary(stage: str, **counts: object) -> str:
    """The one line every command ends with, printed to stdout so scripts can grep it."""
    line = f"{stage}: " + ", ".join(f"{k}={v}" for k, v in counts.items())
    print(scrub(line), flush=True)
    return line
