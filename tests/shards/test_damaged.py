"""Damaged shards (issue 12, defect 8): `shards info`, `split` and `sample` follow one policy.

A damaged shard is read up to the damage and skipped from there, named in one warning line,
counted (`damaged_shards=1`), and the command exits 1; never a traceback. The three commands
agree on the samples: every good shard's samples exactly once, plus the complete samples before
the damage. Also (defect 10 and the bad-input part): a non-JSON index.json, out-of-range
options and an `--out` of the wrong kind exit 2 before anything is read or written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from facesift.shards.reader import DamagedShard, iter_keys, iter_samples
from tests.shards.fake_shards import (DAMAGE_KINDS, damage, keys_grid, make_set, readable_keys,
                                      shards_cli as main)

LAYOUT = keys_grid(3, 6)                 # 3 shards x 6 samples; the middle one gets damaged


def _damaged_set(root: Path, kind: str) -> tuple[Path, list[str]]:
    """A 3-shard set with index.json whose middle shard is damaged; and the keys every reader uses."""
    paths = make_set(root, LAYOUT)
    damage(paths[1], kind)
    return root, LAYOUT[0] + readable_keys(LAYOUT[1], kind) + LAYOUT[2]


def _no_traceback(capsys, caplog) -> str:
    """stdout + stderr + log of the command, which must not hold a traceback."""
    captured = capsys.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "Traceback" not in text
    return text


def _warned_once(caplog, shard: str) -> None:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
             and r.getMessage().startswith("damaged shard")]
    assert len(lines) == 1 and shard in lines[0], lines


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_readers_raise_damaged_shard_after_the_complete_samples(tmp_path, kind):
    root, _ = _damaged_set(tmp_path / "s", kind)
    shard = root / "faces-000001.tar"
    expected = readable_keys(LAYOUT[1], kind)
    for url in (str(shard), f"pipe:cat {shard}"):          # seeking and streaming agree
        if kind == "missing" and url.startswith("pipe:"):
            continue
        got: list[str] = []
        with pytest.raises(DamagedShard) as caught:
            got.extend(iter_keys(url))
        assert got == expected and caught.value.samples == len(expected), (url, caught.value)
        assert caught.value.url == url and caught.value.reason
        samples: list[str] = []
        with pytest.raises(DamagedShard):
            samples.extend(s["__key__"] for s in iter_samples(url))
        assert samples == expected


def test_a_cut_off_header_region_or_a_garbled_header_is_damage_not_a_quiet_end(tmp_path):
    """tarfile stops silently at both; the readers must not count such a shard as complete."""
    from tests.shards.fake_shards import member_offsets
    paths = make_set(tmp_path / "s", [LAYOUT[0]])
    data = paths[0].read_bytes()
    header = member_offsets(paths[0])[f"{LAYOUT[0][2]}.jpg"][0]
    paths[0].write_bytes(data[:header] + b"x" * 512 + data[header + 512:])
    with pytest.raises(DamagedShard, match="corrupt member header"):
        list(iter_keys(str(paths[0])))


@pytest.mark.parametrize("kind", DAMAGE_KINDS)
def test_info_split_and_sample_agree_on_a_damaged_set(tmp_path, kind, capsys, caplog):
    root, keys = _damaged_set(tmp_path / "s", kind)
    shard = "faces-000001.tar"

    assert main(["shards", "info", str(root), "--json", "--workers", "1"]) == 1
    text = capsys.readouterr().out
    info = json.loads(text)
    assert info["samples"] == len(keys) and info["shards"] == 3 and info["damaged_shards"] == 1
    assert info["damaged"][0]["shard"].endswith(shard) and info["damaged"][0]["samples"] == len(keys) - 12
    assert "Traceback" not in caplog.text
    _warned_once(caplog, shard)
    caplog.clear()

    assert main(["shards", "info", str(root), "--workers", "2"]) == 1       # parallel: the same counts
    out = _no_traceback(capsys, caplog)
    assert f"samples={len(keys)}," in out and "damaged_shards=1" in out
    _warned_once(caplog, shard)
    caplog.clear()

    assert main(["shards", "split", str(root), "--fractions", "1,0.5", "--out", str(tmp_path / "split")]) == 1
    out = _no_traceback(capsys, caplog)
    assert "damaged_shards=1" in out
    _warned_once(caplog, shard)
    assert (tmp_path / "split" / "split-1.0.txt").read_text().split() == keys   # each exactly once, index order
    summary = json.loads((tmp_path / "split" / "split.json").read_text())
    assert summary["total"] == len(keys) and summary["damaged_shards"][0]["shard"].endswith(shard)
    caplog.clear()

    sheet = tmp_path / "sheet.png"
    assert main(["shards", "sample", "100", str(root), "--out", str(sheet), "--cell", "16"]) == 1
    out = _no_traceback(capsys, caplog)
    assert f"shown={len(keys)}," in out and "damaged_shards=1" in out and sheet.exists()
    _warned_once(caplog, shard)
    caplog.clear()

    assert main(["shards", "verify", str(root), "--workers", "1", "--no-decode"]) == 1
    assert shard in _no_traceback(capsys, caplog)


def test_the_sample_drawn_from_a_damaged_set_comes_from_its_readable_samples(tmp_path):
    from facesift.shards.contact_sheet import sample_images
    from facesift.shards.damaged import DamageTally
    root, keys = _damaged_set(tmp_path / "s", "cut-in-data")
    tally = DamageTally()
    drawn = sample_images(root, 5, seed=1, progress=False, tally=tally)
    assert len(drawn) == 5 and {k for k, _ in drawn} <= set(keys) and len(tally) == 1


def test_a_set_with_only_damaged_shards_exits_1_with_nothing_to_draw(tmp_path, capsys, caplog):
    paths = make_set(tmp_path / "s", [LAYOUT[0]])
    damage(paths[0], "zero-bytes")
    assert main(["shards", "sample", "4", str(tmp_path / "s"), "--out", str(tmp_path / "x.png")]) == 1
    assert "shown=0" in _no_traceback(capsys, caplog) and not (tmp_path / "x.png").exists()
    assert main(["shards", "info", str(tmp_path / "s"), "--workers", "1"]) == 1
    assert "samples=0," in _no_traceback(capsys, caplog)


@pytest.mark.parametrize("content", [b"{not json", b"", b"\x00\xff\xfe garbage", b'{"shardlist": [{"nsamples": 3}]}',
                                     b'{"shardlist": [{"url": "faces-000000.tar", "nsamples": -1}]}'])
@pytest.mark.parametrize("command", ["info", "verify", "split", "sample"])
def test_a_broken_index_json_is_one_clear_line_and_exit_2(tmp_path, content, command, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    (root / "index.json").write_bytes(content)
    argv = {"info": ["info", str(root)], "verify": ["verify", str(root)],
            "split": ["split", str(root), "--out", str(tmp_path / "o")],
            "sample": ["sample", "2", str(root), "--out", str(tmp_path / "o.png")]}[command]
    assert main(["shards", *argv]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "index.json" in errors[0], errors
    _no_traceback(capsys, caplog)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()


def test_a_broken_part_index_is_bad_input_for_merge_index(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT[:1], index=False)[0].parent
    (root / "index-p0of1.json").write_text('{"shardlist": [')
    assert main(["shards", "merge-index", str(root)]) == 2
    assert "index-p0of1.json" in caplog.text and "not valid JSON" in caplog.text
    _no_traceback(capsys, caplog)


BAD_OPTIONS = [
    ["info", "{root}", "--workers", "-1"],
    ["info", "{root}", "--set", "top=0"],
    ["verify", "{root}", "--set", "max_print=-1"],
    ["verify", "{root}", "--workers", "100000"],
    ["split", "{root}", "--out", "{out}", "--seed", "-1"],
    ["split", "{root}", "--out", "{out}", "--fractions", "1,0"],
    ["split", "{root}", "--out", "{out}", "--fractions", "1.5"],
    ["sample", "0", "{root}", "--out", "{out}"],
    ["sample", "-3", "{root}", "--out", "{out}"],
    ["sample", "1000000", "{root}", "--out", "{out}"],
    ["sample", "4", "{root}", "--out", "{out}", "--cell", "0"],
    ["sample", "4", "{root}", "--out", "{out}", "--cols", "-1"],
    ["sample", "4", "{root}", "--out", "{out}", "--seed", "-5"],
]


@pytest.mark.parametrize("argv", BAD_OPTIONS, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_out_of_range_options_exit_2_before_any_work(tmp_path, argv, capsys, caplog, monkeypatch):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    out = tmp_path / "out"
    import facesift.shards.reader as reader
    monkeypatch.setattr(reader, "iter_members", lambda *a, **k: pytest.fail("a shard was read"))
    assert main(["shards", *[a.format(root=root, out=out) for a in argv]]) == 2
    assert "out of range" in caplog.text or "must be" in caplog.text, caplog.text
    assert not out.exists()
    _no_traceback(capsys, caplog)


def test_an_out_of_the_wrong_kind_exits_2_before_any_work(tmp_path, capsys, caplog):
    root = make_set(tmp_path / "s", LAYOUT[:1])[0].parent
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me\n")
    assert main(["shards", "split", str(root), "--out", str(a_file)]) == 2
    assert "not a directory" in caplog.text and a_file.read_text() == "keep me\n"
    a_dir = tmp_path / "dir"
    a_dir.mkdir()
    assert main(["shards", "sample", "2", str(root), "--out", str(a_dir)]) == 2
    assert "is a directory" in caplog.text and not list(a_dir.iterdir())
    _no_traceback(capsys, caplog)
