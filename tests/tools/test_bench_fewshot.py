"""tools/bench_fewshot.py's bookkeeping: the held-out split, the exclusions, intervals and the table."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(TOOLS))
    try:
        spec = importlib.util.spec_from_file_location("bench_fewshot_under_test", TOOLS / "bench_fewshot.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(TOOLS))


def _landmarks5(root: Path) -> Path:
    lines = []
    for folder, names in (("lfw_5590", ["a.jpg", "b.jpg"]), ("net_7876", ["1_0_0.jpg", "2_0_0.jpg", "_0_7_0.jpg"])):
        (root / folder).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (80, 80), (90, 90, 90)).save(root / folder / n)
            lines.append(f"{folder}/{n} 30 50 40 32 48 30 30 40 50 50")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_holdout_split_and_exclusions(bench, tmp_path):
    data = _landmarks5(tmp_path / "l5")
    train, test, dropped = bench.training_lists(data, None, "lfw_5590", ["net_7876/_*"], tmp_path / "w")
    tr = [l.split()[0] for l in train.read_text().splitlines()]
    te = [l.split()[0] for l in test.read_text().splitlines()]
    assert dropped == 1 and len(tr) == 2 and all("/net_7876/" in p and "/_" not in p for p in tr)
    assert len(te) == 2 and all("/lfw_5590/" in p for p in te) and not set(tr) & set(te)
    # with --test: everything but the exclusions trains, the given list is the test
    given = tmp_path / "held.txt"
    given.write_text("x")
    train2, test2, dropped2 = bench.training_lists(data, str(given), "lfw_5590", [], tmp_path / "w2")
    assert test2 == given and dropped2 == 0 and len(train2.read_text().splitlines()) == 5


def test_intervals_and_table(bench):
    m, lo, hi = bench.t_interval([10.0, 12.0, 14.0])
    assert m == 12.0 and np.isclose(hi - m, 4.303 * 2.0 / np.sqrt(3)) and np.isclose(m - lo, hi - m)
    assert bench.t_interval([5.0]) == (5.0, 5.0, 5.0)
    rows = [{"init": "scratch", "fraction": 0.02, "nme_mean": 40.0, "nme_ci": [38.0, 42.0], "seeds": 3},
            {"init": "swav", "fraction": 0.02, "nme_mean": 30.0, "nme_ci": [29.0, 31.0], "seeds": 3},
            {"init": "scratch", "fraction": 1.0, "nme_mean": 10.0, "nme_ci": [9.0, 11.0], "seeds": 3},
            {"init": "swav", "fraction": 1.0, "nme_mean": 10.5, "nme_ci": [10.0, 11.0], "seeds": 3}]
    table = bench.format_rows(rows, mean_shape=45.0)
    two, hundred = [l for l in table.splitlines() if l.strip().startswith(("2%", "100%"))][::-1]
    assert "0.750" in two and "apart" in two and "NO" not in two
    assert "1.050" in hundred and "overlap" in hundred
    lines = bench.format_rows(rows, mean_shape=20.0).splitlines()
    assert "yes/yes" in lines[1] and "NO/NO" in lines[2]     # 100 % beats 20 %, 2 % does not


def test_stop_all_ends_ranks_left_running(bench):
    """An interrupted bench must not leave its fine-tuning ranks holding the cores."""
    import subprocess
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stubborn = subprocess.Popen([sys.executable, "-c",
                                 "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert stubborn.stdout.readline().strip() == b"ready"   # its SIGTERM handler is in place
    bench.stop_all([done, stubborn, polite], grace_s=0.5)
    assert polite.returncode == -15 and stubborn.returncode == -9 and done.returncode == 0
    stubborn.stdout.close()
