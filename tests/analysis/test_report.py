"""report.html in a real browser: every section present, every image decodes; a screenshot is kept."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from facesift.analysis.report import SECTIONS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_is_self_contained(dup_redundancy):
    out, summary = dup_redundancy
    page = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in page
    # nothing is fetched: every src is inline data
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) > 20 and all(s.startswith("data:image/") for s in srcs)
    assert summary["report_thumbnails"] > 20


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser` installs it)")
def test_report_renders_in_headless_chromium(dup_redundancy, tmp_path, artifacts_dir):
    out, _ = dup_redundancy
    url = (out / "report.html").resolve().as_uri()
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the page's own script: every <img> complete with naturalWidth > 0 and every section present
    assert 'data-status="ok"' in html, re.findall(r"status: [^<]*", html)
    assert "broken=0" in html and 'data-broken="1"' not in html
    for section in SECTIONS:
        assert f'id="{section}"' in html
    shot = artifacts_dir / "redundancy-report.png"
    shot.unlink(missing_ok=True)
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4200", "--hide-scrollbars", url)
    assert r.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000
