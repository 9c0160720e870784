"""Progress bars that read well both on a terminal and in a log file.

On a terminal a tqdm bar redraws in place. Elsewhere (CI, `make demo > log`, a SLURM output file)
every redraw would land in the log as a line of its own, so there the same bar prints one plain
line at most every `LOG_EVERY_S` seconds (and its last state when it closes): the log shows that
work is moving and how fast, and stays readable.
"""
from __future__ import annotations

import os
import re
import sys
from typing import IO, Any, Iterable

from tqdm import tqdm

LOG_EVERY_S = float(os.environ.get("FACESIFT_PROGRESS_EVERY_S", "30"))
_PLAIN_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"


_CURSOR_MOVES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (and drops the
    cursor moves nested bars use to share a terminal)."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _CURSOR_MOVES.sub("", text).replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def on_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def progress(iterable: Iterable | None = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """`tqdm(...)` with the same arguments; plain periodic lines when stderr is not a terminal."""
    if disable or on_terminal():
        return tqdm(iterable, disable=disable, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("bar_format", _PLAIN_FORMAT if kwargs.get("total") is not None or
                      hasattr(iterable, "__len__") else "{desc}: {n_fmt} {unit} [{elapsed}, {rate_fmt}]")
    return tqdm(iterable, file=_Lines(sys.stderr), mininterval=LOG_EVERY_S, maxinterval=LOG_EVERY_S * 4,
                ascii=True, **kwargs)
