"""The table and the redundancy index on constructed results with known answers."""
from __future__ import annotations

import json
import math

import pytest

from facesift.finetune import curve
from facesift.cli import main as cli_main


def _write(folder, init, fraction, seed, nme, task="landmarks"):
    folder.mkdir(parents=True, exist_ok=True)
    r = {"key": f"{init}-{fraction}-{seed}", "task": task, "dataset": "lm5", "init": init, "fraction": fraction,
         "seed": seed, "adapt": "full", "distill": 0, "primary_metric": "nme", "lower_is_better": True,
         "metrics": {"nme": nme, "nme_diag": nme / 2}}
    (folder / f"{r['key']}.json").write_text(json.dumps(r))


def test_point_index_known_answers():
    # NME 4.0 at 100%, 4.1 at 10% (inside the 5% band, edge 4.2), 5.0 at 2%:
    # the band is crossed 1/9 of the way from 10% to 2% in log(fraction)
    ix, bounded = curve.point_index([1.0, 0.1, 0.02], [4.0, 4.1, 5.0], lower_is_better=True)
    assert bounded and ix == pytest.approx(0.1 * 0.2 ** (1 / 9))
    # higher-is-better: accuracy 0.90, 0.80 at 10% -> edge 0.855, halfway in log between 1 and 0.1
    ix, bounded = curve.point_index([1.0, 0.1], [0.90, 0.81], lower_is_better=False)
    assert bounded and ix == pytest.approx(10 ** (-(0.90 - 0.855) / (0.90 - 0.81)))
    # every fraction inside the band: bounded by the smallest fraction tried
    assert curve.point_index([1.0, 0.1, 0.02], [4.0, 4.05, 4.1], True) == (0.02, False)
    # order of the inputs does not matter
    assert curve.point_index([0.02, 1.0, 0.1], [5.0, 4.0, 4.1], True)[0] == pytest.approx(0.1 * 0.2 ** (1 / 9))


def test_redundancy_index_uncertainty_from_seeds():
    exact = {1.0: [4.0, 4.0, 4.0], 0.1: [4.1, 4.1, 4.1], 0.02: [5.0, 5.0, 5.0]}
    ix = curve.redundancy_index(exact, True)
    assert ix["index"] == pytest.approx(0.1 * 0.2 ** (1 / 9)) and ix["log10_std"] == pytest.approx(0.0)
    noisy = {1.0: [3.9, 4.0, 4.1], 0.1: [3.9, 4.1, 4.3], 0.02: [4.6, 5.0, 5.4]}
    ix2 = curve.redundancy_index(noisy, True)
    assert ix2["index"] == pytest.approx(0.1 * 0.2 ** (1 / 9))          # the seed means are the same
    assert ix2["log10_std"] > 0 and ix2["ci68"][0] < ix2["index"] < ix2["ci68"][1]
    single = curve.redundancy_index({1.0: [4.0], 0.1: [4.1], 0.02: [5.0]}, True)
    assert single["ci68"] is None and "no uncertainty" in curve.format_index(single)


def test_table_plot_and_cli(tmp_path, capsys):
    res = tmp_path / "ft" / "results"
    for seed, d in enumerate((-0.1, 0.0, 0.1)):
        _write(res, "scratch", 1.0, seed, 4.5 + d)
        _write(res, "scratch", 0.1, seed, 6.6 + d)
        _write(res, "scratch", 0.02, seed, 13.5 + d)
        _write(res, "swav.pt", 1.0, seed, 3.9 + d)
        _write(res, "swav.pt", 0.1, seed, 4.0 + d)
        _write(res, "swav.pt", 0.02, seed, 5.0 + d)
    blocks = curve.summarise(curve.load_results(res))
    assert len(blocks) == 1 and len(blocks[0]["rows"]) == 6
    row = next(r for r in blocks[0]["rows"] if r["init"] == "scratch" and r["fraction"] == 0.02)
    assert row["metrics"]["nme"][0] == pytest.approx(13.5) and row["seeds"] == 3
    assert row["metrics"]["nme"][1] == pytest.approx(math.sqrt(2 / 3) * 0.1)
    # SwAV stays in the band longer than scratch: a smaller index
    assert blocks[0]["index"]["swav.pt"]["index"] < blocks[0]["index"]["scratch"]["index"]
    assert cli_main(["curve", str(res)]) == 0
    out = capsys.readouterr().out
    assert "13.50 ± 0.08" in out and "redundancy index" in out and "swav.pt" in out
    png = tmp_path / "ft" / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "ft" / "curve.json").read_text())
    assert saved[0]["metric"] == "nme"


def test_a_run_of_earlier_settings_is_not_counted_as_another_seed(tmp_path, capsys):
    """The grid never deletes a result: after a change of settings, one folder holds two results
    for the same init, fraction and seed. The newer is the run; the older is named and counted in
    the summary, and is not an error (re-running a changed recipe into its folder is normal)."""
    import os

    res = tmp_path / "results"
    for seed in range(2):
        _write(res, "scratch", 0.1, seed, 6.0 + seed)
    stale = json.loads((res / "scratch-0.1-0.json").read_text())
    stale.update(key="old-settings", metrics={"nme": 60.0})
    (res / "old-settings.json").write_text(json.dumps(stale))
    os.utime(res / "old-settings.json", (1, 1))   # written long before
    skipped: list[str] = []
    superseded: list[str] = []
    results = curve.load_results(res, skipped, superseded)
    assert sorted(r["key"] for r in results) == ["scratch-0.1-0", "scratch-0.1-1"]
    assert not skipped and len(superseded) == 1 and "old-settings.json" in superseded[0]
    row = curve.summarise(results)[0]["rows"][0]
    assert row["seeds"] == 2 and row["metrics"]["nme"][0] == pytest.approx(6.5)
    assert cli_main(["curve", str(res)]) == 0
    printed = capsys.readouterr()
    assert "superseded by scratch-0.1-0.json" in printed.err and "superseded=1" in printed.out


def test_no_results_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["curve", str(tmp_path)]) == 2
    assert "no usable fine-tuning results" in capsys.readouterr().err


def test_the_table_says_what_to_conclude(tmp_path):
    """With the mean-shape baseline in the results, the table names the fractions that do not
    beat it and the pretrained/scratch ratio per fraction."""
    folder = tmp_path / "results"
    for seed in range(2):
        for frac, s, w in ((1.0, 10.0, 9.0), (0.1, 20.0, 14.0), (0.02, 40.0, 20.0)):
            _write(folder, "scratch", frac, seed, s + seed)
            _write(folder, "swav.pt", frac, seed, w + seed)
    for p in folder.glob("*.json"):
        r = json.loads(p.read_text())
        r["baseline"] = {"mean_shape": {"nme": 30.0, "nme_diag": 15.0}}
        p.write_text(json.dumps(r))
    blocks = curve.summarise(curve.load_results(folder))
    assert blocks[0]["baseline"] == 30.0
    text = curve.format_table(blocks)
    assert "mean-shape baseline" in text and "nme 30.00" in text
    assert "scratch: does NOT beat the mean shape at 2%" in text
    assert "swav.pt: beats the mean shape at every fraction" in text
    ratios = next(l for l in text.splitlines() if l.startswith("swav.pt / scratch"))
    assert "0.90 at 100%" in ratios and "0.71 at 10%" in ratios and "0.51 at 2%" in ratios
    # results without a baseline (older grids) print no verdict on it
    for p in folder.glob("*.json"):
        r = json.loads(p.read_text())
        r.pop("baseline")
        p.write_text(json.dumps(r))
    assert "mean-shape" not in curve.format_table(curve.summarise(curve.load_results(folder)))
