"""The `redundancy` command's other paths: --shards on the fly, hash-defined duplicates,
SemDeDup grouping, an approximate index with its recall reported, and consistent outputs."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageEnhance

from tests.analysis.conftest import write_shard
from tests.analysis.test_embed import _cli

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "landmarks5" / "images"


def _burst_shards(root: Path) -> Path:
    """60 distinct crops; owner 'burst' re-uploads 10 of them 4 times (re-encoded, brighter, resized)."""
    files = sorted(SAMPLE.glob("*.jpg"))[:60]
    items = []
    for n, p in enumerate(files):
        im = Image.open(p).convert("RGB")
        owner = "burst" if n < 10 else f"o{n}"
        items.append((f"p{n}_0", im, {"photo_id": f"p{n}", "owner": owner}))
        if n < 10:
            for v in range(4):
                copy = ImageEnhance.Brightness(im).enhance(1.0 + 0.08 * v).resize((72 + 4 * v, 72 + 4 * v))
                items.append((f"p{n}x{v}_0", copy, {"photo_id": f"p{n}x{v}", "owner": owner}))
    return write_shard(root / "faces-000000.tar", items).parent


def test_redundancy_paths(tmp_path, capsys):
    shards = _burst_shards(tmp_path / "shards")
    out = tmp_path / "red"
    assert _cli("redundancy", "--shards", str(shards), "--out", str(out), "--no-progress") == 0
    assert (out / "emb" / "embeddings.npy").exists()            # embedded on the fly
    s = json.loads((out / "summary.json").read_text())
    assert s["valid"] == 100 and s["groups"] == 10 and s["duplicates"] == 40 and s["kept"] == 60
    owner = s["breakdowns"]["owner"]
    assert owner["top"][0]["value"] == "burst" and owner["within_share"] == 1.0
    groups = [json.loads(line) for line in (out / "groups.jsonl").read_text().splitlines()]
    assert all(g["size"] == 5 and g["owners"] == ["burst"] for g in groups)
    assert all(g["members"][0].split("_")[0].rstrip("0123456789x") == "p" for g in groups)
    assert len((out / "keep.txt").read_text().split()) == 60
    assert "redundancy: images=100" in capsys.readouterr().out

    # SemDeDup groups are not pairs, so they are not verified: the calibrated cosine alone decides
    # (measured: 41, one crop merged at cosine 0.40)
    for extra, check in ((["--grouping", "semdedup", "--keep", "hard"], lambda s: 40 <= s["duplicates"] <= 42),
                         (["--by", "emb+phash", "--hamming", "6"], lambda s: s["duplicates"] >= 40),
                         (["--index", "ivf"], lambda s: s["search"]["index"] == "ivf"
                          and s["search"]["recall"]["recall_at_threshold"] is not None)):
        o = tmp_path / f"red-{extra[1]}"
        assert _cli("redundancy", "--emb", str(out / "emb"), "--out", str(o), "--no-progress", *extra) == 0
        s2 = json.loads((o / "summary.json").read_text())
        assert check(s2), (extra, {k: s2[k] for k in ("duplicates", "groups", "search")})
        assert s2["duplicates"] + s2["kept"] == 100
