"""Registered secrets never reach a log line, whoever formats them."""
from __future__ import annotations

import logging

from facesift.common.logsetup import register_secrets, setup_logging, summary


def test_secret_scrubbed_from_messages_and_tracebacks(capsys):
    setup_logging(0)
    register_secrets(["s3cr3t-key-value"])
    log = logging.getLogger("facesift.test")
    log.info("calling https://api/?api_key=%s", "s3cr3t-key-value")
    try:
        raise ValueError("bad key s3cr3t-key-value")
    except ValueError:
        log.exception("failed")
    summary("stage", key="s3cr3t-key-value", ok=3)
    out = capsys.readouterr()
    assert "s3cr3t-key-value" not in out.err + out.out
    assert "api_key=***" in out.err
    assert "stage: key=***, ok=3" in out.out


def test_the_handler_follows_sys_stderr_when_it_is_swapped(monkeypatch):
    import io
    import logging
    import sys

    from facesift.common.logsetup import setup_logging
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging()
    first.close()                      # what a finished capture does to its stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("facesift.test").warning("still heard")
    assert "still heard" in second.getvalue()
