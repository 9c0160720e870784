"""Atomic writes leave the old file intact when the writer dies half-way."""
from __future__ import annotations

import json

import pytest

from facesift.common.atomic import atomic_write, atomic_write_json, remove_stale_temps


def test_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_failure_keeps_old_content_and_no_temp(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as fh:
            fh.write("new, half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert list(tmp_path.iterdir()) == [p]


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".x.txt.abc.tmp").write_text("junk")
    (tmp_path / "keep.txt").write_text("ok")
    assert remove_stale_temps(tmp_path) == 1
    assert [f.name for f in tmp_path.iterdir()] == ["keep.txt"]
