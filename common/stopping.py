"""Stop a long run cleanly on a scheduler's notice or Ctrl-C, at a step boundary, with a checkpoint.

Clusters pre-empt: SLURM sends SIGTERM (or, with `--signal`, SIGUSR1) some seconds before it
kills a job, Kubernetes sends SIGTERM, torchrun forwards SIGTERM/SIGINT to its workers and
SIGKILLs them 30 s later. A run that only checkpoints every N steps loses up to N steps each
time. `GracefulStop` turns the first such signal into a request that the training loop honours
after the current step — checkpoint, then exit with 128 + the signal number, so the scheduler
sees an unfinished job and a re-run (`--resume`) continues. `facesift pretrain` polls the
stopper it owns; code deeper down (a fine-tuning run inside a grid) asks `requested()` and
raises `StopRequested`, which the command turns into the exit status.

The same signal often arrives twice at once (the terminal's Ctrl-C reaches the whole process
group and torchrun repeats it to its workers), so repeats within `REPEAT_WINDOW_S` are one
request; a later repeat means "now": the signal's usual action runs at once.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
WORKER_IGNORED = STOP_SIGNALS  # loader workers: the main process decides when they stop
REPEAT_WINDOW_S = 2.0


_ACTIVE: list["GracefulStop"] = []


def requested() -> str | None:
    """The stop signal the innermost active `GracefulStop` received, else None."""
    return _ACTIVE[-1].received if _ACTIVE else None


class StopRequested(Exception):
    """Raised by a loop that honoured a stop request, after its checkpoint."""

    def __init__(self, signal_name: str):
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


class GracefulStop:
    """Context manager: `received` holds the name of the first stop signal, else None."""

    def __init__(self, signals: tuple[str, ...] = STOP_SIGNALS):
        self.signals = [getattr(signal, name) for name in signals if hasattr(signal, name)]
        self.received: str | None = None
        self.signum = 0
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
        if self in _ACTIVE:
            _ACTIVE.remove(self)

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received, self.signum, self._first_at = name, signum, time.monotonic()
            log.warning("%s received: stopping after this step, with a checkpoint "
                        "(send it again to stop at once)", name)
            return
        if time.monotonic() - self._first_at < REPEAT_WINDOW_S:
            return  # the same notice delivered twice (process group + launcher)
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()
        if callable(previous):
            previous(signum, frame)  # e.g. SIGINT's KeyboardInterrupt
        else:
            signal.raise_signal(signum)


def ignore_in_worker(_worker_id: int = 0) -> None:
    """For DataLoader worker processes. Stop signals often reach the whole process group (a
    terminal's Ctrl-C; torchrun and SLURM signal every process of a worker), and a worker that
    dies makes PyTorch raise in the main process at once, mid-step, from its SIGCHLD handler —
    so the workers ignore them and the trainer shuts them down after its checkpoint. An
    orphaned worker still exits on its own: it watches its parent."""
    for name in WORKER_IGNORED:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def stop_code(name: str | None) -> int:
    """Exit status for a run summary's `stopped` field: 0 when the run finished, else 128 + the
    signal's number, as a shell reports a process the signal ended."""
    return 128 + int(getattr(signal, name)) if name else 0


def install_forwarding(child_pid: int) -> Callable[[], None]:
    """For a launcher waiting on a child (`facesift pretrain --nproc` → torchrun): pass
    SIGTERM/SIGUSR1 on to it, and leave Ctrl-C to the terminal, which already sends it to
    the whole process group. Returns a function that restores the previous handlers."""
    import os

    previous = {}

    def forward(signum: int, frame: FrameType | None) -> None:
        os.kill(child_pid, signum)

    for name in ("SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            previous[getattr(signal, name)] = signal.signal(getattr(signal, name), forward)
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    return restore
