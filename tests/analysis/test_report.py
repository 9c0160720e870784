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


def test_report_is_self_contained(hardneg_run):
    out, summary = hardneg_run
    page = (out / "report.html").read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in page
    # nothing is fetched: every src is inline data
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) > 20 and all(s.startswith("data:image/") for s in srcs)
    assert summary["report_thumbnails"] > 20


def test_report_shows_the_calibration(hardneg_run):
    out, summary = hardneg_run
    page = (out / "report.html").read_text()
    section = page[page.index("<section id='calibration'>"):]
    section = section[:section.index("</section>")]
    # both histograms (copies vs nearest other image; copies vs candidate pairs), as inline PNGs
    assert section.count('src="data:image/png;base64,') == 2
    assert 'alt="calibration histogram: embedding (cosine)"' in section
    assert 'alt="calibration histogram: verification (aligned thumbnails)"' in section
    cal, ver = summary["calibration"], summary["verification"]
    # the chosen thresholds with their expected precision and recall, as summary.json has them
    assert f"<td>{cal['emb']['used']:.3f}</td>" in section and f"<td>{ver['threshold']:.3f}</td>" in section
    assert f"<td>{ver['expected_precision']:.3f}</td>" in section and f"<td>{ver['expected_recall']:.3f}</td>" in section
    assert f"{cal['copies']} known copies of {cal['sample']} sampled images" in section
    assert "expected precision" in section and "expected recall" in section
    hist = cal["emb"]["histogram"]
    assert len(hist["edges"]) == len(hist["copy"]) + 1 and sum(hist["copy"]) == cal["copies"]
    assert sum(hist["nearest"]) == summary["valid"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser` installs it)")
def test_report_renders_in_headless_chromium(hardneg_run, tmp_path, artifacts_dir):
    out, _ = hardneg_run
    url = (out / "report.html").resolve().as_uri()
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # the page's own script: every <img> complete with naturalWidth > 0 and every section present
    assert 'data-status="ok"' in html, re.findall(r"status: [^<]*", html)
    assert "broken=0" in html and 'data-broken="1"' not in html
    for section in SECTIONS:
        assert f'id="{section}"' in html
    calibration = html[html.index('<section id="calibration">'):]
    calibration = calibration[:calibration.index("</section>")]
    assert calibration.count("<img") == 2 and "expected precision" in calibration  # both histograms drawn
    shot = artifacts_dir / "redundancy-report.png"
    shot.unlink(missing_ok=True)
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,4200", "--hide-scrollbars", url)
    assert r.returncode == 0 and shot.exists() and shot.stat().st_size > 50_000
