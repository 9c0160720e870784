"""`shards verify` finds every kind of damage and names the shard, the key and what is wrong."""
from __future__ import annotations

import json
import tarfile

import pytest

from facesift.shards.verify import check_shard, verify
from tests.shards.fake_shards import keys_grid, make_set, reindex, sample, sha256, write_shard



def _member_offset(tar_path, name):
    with tarfile.open(tar_path) as tar:
        info = tar.getmember(name)
        return info.offset_data, info.size


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def good(tmp_path):
    d = tmp_path / "shards"
    make_set(d, keys_grid(3, 6))
    return d


def _problems(report, shard_name=None):
    return [p for p in report.problems if shard_name is None or p.shard.endswith(shard_name)]


def test_clean_set_passes_and_counts(good):
    report = verify(good, progress=False)
    assert report.ok, report.problems
    assert report.nsamples == 18 and len(report.shards) == 3
    assert [c.sha256 for c in report.shards] == [sha256(good / f"faces-{i:06d}.tar") for i in range(3)]


def test_flipped_byte_in_a_jpg_is_caught_by_checksum_and_decode(good):
    shard = good / "faces-000001.tar"
    offset, _ = _member_offset(shard, "p1x2_0.jpg")
    _flip(shard, offset + 1)                     # the SOI marker: no decoder accepts this
    report = verify(good, progress=False)
    assert not report.ok
    whats = [str(p) for p in _problems(report, "faces-000001.tar")]
    assert any("sha256" in w and "does not match" in w for w in whats), whats
    assert any(p.key == "p1x2_0" and "does not decode" in p.what for p in report.problems), whats
    assert not _problems(report, "faces-000000.tar") and not _problems(report, "faces-000002.tar")

    reindex(good)                                # index now agrees: only decoding can tell
    report = verify(good, progress=False)
    assert [(p.key, "does not decode" in p.what) for p in report.problems] == [("p1x2_0", True)]
    assert verify(good, progress=False, decode=False).ok   # structure alone is fine


def test_truncated_jpg_and_replaced_member_are_named(good):
    shard = good / "faces-000002.tar"
    bad = sample("p2x0_0")
    bad["jpg"] = bad["jpg"][: len(bad["jpg"]) // 2]          # truncated body
    replaced = sample("p2x1_0")
    replaced["json"] = b"{not json"                            # member replaced by garbage
    missing = sample("p2x2_0")
    del missing["json"]                                        # a sample without its json
    swapped = sample("p2x3_0")
    swapped["json"] = sample("p2x4_0")["json"]                 # another sample's json
    write_shard(shard, [bad, replaced, missing, swapped] + [sample(f"p2x{i}_0") for i in range(4, 6)])
    report = verify(good, progress=False)
    by_key = {p.key: p.what for p in report.problems if p.key}
    assert "does not decode" in by_key["p2x0_0"]
    assert "json does not parse" in by_key["p2x1_0"]
    assert "missing member(s) json" in by_key["p2x2_0"]
    assert "describes photo 'p2x4'" in by_key["p2x3_0"]
    assert any(p.key is None and "sha256" in p.what for p in report.problems)


def test_duplicate_key_across_shards(tmp_path):
    d = tmp_path / "dup"
    make_set(d, [["a_0", "b_0"], ["c_0", "b_0"]])
    report = verify(d, progress=False)
    dups = [p for p in report.problems if "duplicate key" in p.what]
    assert len(dups) == 1
    assert dups[0].key == "b_0" and dups[0].shard.endswith("faces-000001.tar")
    assert "faces-000000.tar" in dups[0].what


def test_missing_unlisted_and_miscounted_shards(good, tmp_path):
    (good / "faces-000001.tar").unlink()
    write_shard(good / "faces-000007.tar", [sample("zz_0")])    # on disk, not in the index
    index = json.loads((good / "index.json").read_text())
    index["shardlist"][2]["nsamples"] = 99
    (good / "index.json").write_text(json.dumps(index))
    report = verify(good, progress=False)
    text = "\n".join(map(str, report.problems))
    assert any(p.shard.endswith("faces-000001.tar") and "missing" in p.what for p in report.problems), text
    assert any(p.shard.endswith("faces-000007.tar") and "not listed" in p.what for p in report.problems), text
    assert any(p.shard.endswith("faces-000002.tar") and "6 samples" in p.what and "99" in p.what
               for p in report.problems), text


@pytest.mark.parametrize("cut", [3000, 2048, 5 * 512, "marker"])
def test_cut_off_tar_is_a_problem_not_a_crash(good, cut):
    """Cut mid-member, mid-header, at a member boundary, or just the end-of-archive marker."""
    shard = good / "faces-000000.tar"
    data = shard.read_bytes()
    if cut == "marker":
        with tarfile.open(shard) as tar:
            last = tar.getmembers()[-1]
        cut = last.offset_data + (last.size + 511) // 512 * 512
    shard.write_bytes(data[:cut])
    check = check_shard(str(shard))
    assert any("truncated tar" in p.what or "unreadable tar" in p.what for p in check.problems), check.problems


def test_parallel_workers_agree_with_serial(good):
    _flip(good / "faces-000000.tar", _member_offset(good / "faces-000000.tar", "p0x1_0.jpg")[0] + 1)
    serial = verify(good, workers=1, progress=False)
    parallel = verify(good, workers=2, progress=False)
    assert serial.problems == parallel.problems and serial.problems
    assert [c.url for c in parallel.shards] == [c.url for c in serial.shards]


def test_cli_exit_codes_and_listing(good, tmp_path, capsys):
    from tests.shards.fake_shards import shards_cli as main
    assert main(["shards", "verify", str(good), "--workers", "1"]) == 0
    assert "ok=True" in capsys.readouterr().out
    (good / "faces-000002.tar").unlink()
    report = tmp_path / "report.json"
    assert main(["shards", "verify", str(good), "--workers", "1", "--report", str(report)]) == 1
    out = capsys.readouterr().out
    assert "faces-000002.tar" in out and "missing" in out and "ok=False" in out
    saved = json.loads(report.read_text())
    assert saved["ok"] is False and saved["problems"][0]["shard"].endswith("faces-000002.tar")
    # any shard spec works, e.g. a brace pattern (no index: checksums cannot be checked)
    assert main(["shards", "verify", str(good / "faces-{000000..000001}.tar"), "--workers", "1"]) == 0
