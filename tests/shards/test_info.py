"""`shards info` counts what is in the shards from the json members alone."""
from __future__ import annotations

import json

from facesift.shards.index import write_index
from facesift.shards.info import collect_info, format_info
from tests.shards.fake_shards import make_set, sample, write_shard


def _mixed_set(d):
    d.mkdir()
    specs = [  # (key, licence, query, detector, source, score, crop)
        ("a_0", 4, "portrait", "mtcnn", "flickr", 0.96, 32),
        ("a_1", 4, "portrait", "mtcnn", "flickr", 0.98, 32),
        ("b_0", 9, "family", "mtcnn", "flickr", 1.00, 32),
        ("c_0", 5, "family", "scrfd", "dir", 0.90, 64),
        ("d_0", None, "", "scrfd", "urls", 0.94, 64),
    ]
    samples = [sample(k, size=crop, license=lic, query=q, detector=det, source=src, score=sc)
               for k, lic, q, det, src, sc, crop in specs]
    write_shard(d / "faces-000000.tar", samples[:3])
    write_shard(d / "faces-000001.tar", samples[3:])
    write_index(d, [{"url": f"faces-00000{i}.tar", "nsamples": n, "sha256": ""} for i, n in ((0, 3), (1, 2))])
    return d


def test_counts_and_breakdowns(tmp_path):
    info = collect_info(_mixed_set(tmp_path / "s"), progress=False)
    assert info["shards"] == 2 and info["samples"] == 5 and info["photos"] == 4
    assert info["bytes"] == sum(p.stat().st_size for p in (tmp_path / "s").glob("*.tar"))
    assert info["license"] == {"4 CC BY": 2, "9 CC0": 1, "5 CC BY-SA": 1, "unknown": 1}
    assert info["query"] == {"portrait": 2, "family": 2, "unknown": 1}
    assert info["detector"] == {"mtcnn": 3, "scrfd": 2}
    assert info["source"] == {"flickr": 3, "dir": 1, "urls": 1}
    assert info["crop_size"] == {"32x32": 3, "64x64": 2}
    assert abs(info["numeric"]["score"]["mean"] - (0.96 + 0.98 + 1.0 + 0.9 + 0.94) / 5) < 1e-9
    assert info["numeric"]["score"]["min"] == 0.90
    text = format_info(info)
    assert "4 CC BY" in text and "64x64" in text and "samples" in text


def test_jpgs_are_not_decoded_and_bad_json_is_counted(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    broken = [sample("x_0"), sample("y_0"), sample("z_0")]
    broken[0]["jpg"] = b"definitely not an image"      # info must not care: it never decodes
    broken[1]["json"] = b"{oops"
    del broken[2]["json"]
    write_shard(d / "faces-000000.tar", broken)
    info = collect_info(d, progress=False)
    assert info["samples"] == 3
    assert info["samples_with_bad_json"] == 1 and info["samples_without_json"] == 1
    assert info["license"] == {"4 CC BY": 1}


def test_parallel_equals_serial_and_cli_json(tmp_path, capsys):
    from tests.shards.fake_shards import shards_cli as main
    d = make_set(tmp_path / "g", [[f"k{s}x{i}_0" for i in range(4)] for s in range(3)])[0].parent
    assert collect_info(d, workers=2, progress=False) == collect_info(d, workers=1, progress=False)
    assert main(["shards", "info", str(d), "--json", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 12 and out["shards"] == 3
    assert main(["shards", "info", str(d / "faces-{000000..000001}.tar"), "--workers", "1"]) == 0
    assert "shards info: shards=2, samples=8" in capsys.readouterr().out
