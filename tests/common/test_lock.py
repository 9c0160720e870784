import os
import signal
import subprocess
import sys
import time

import pytest

from facesift.common.lock import LOCK_NAME, LockHeld, output_lock

HOLD = ("import sys, time; from facesift.common.lock import output_lock\n"
        "with output_lock(sys.argv[1], command='holder-cmd'):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def _holder(out):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(LockHeld) as err:
            with output_lock(tmp_path):
                pass
        assert f"pid {proc.pid}" in str(err.value) and "holder-cmd" in str(err.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock
    with output_lock(tmp_path):
        pass


def test_released_on_an_exception_and_reusable(tmp_path):
    with pytest.raises(ValueError):
        with output_lock(tmp_path):
            raise ValueError("boom")
    with output_lock(tmp_path):
        with pytest.raises(LockHeld):  # the same process, a second open file: refused as well
            with output_lock(tmp_path):
                pass


def test_distinct_names_do_not_block_each_other(tmp_path):
    with output_lock(tmp_path, name=LOCK_NAME + ".part0"), output_lock(tmp_path, name=LOCK_NAME + ".part1"):
        time.sleep(0)
