"""Fixtures shared by the analysis tests: a known-duplicate shard built from ../shared/data,
its embeddings and one redundancy run (built once per session: the tests share the cost)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest


def write_shard(path: Path, images: list[tuple[str, object, dict]]) -> Path:
    """A webdataset shard of (key, PIL image, json meta)."""
    import webdataset as wds
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), mtime=0) as sink:
        for key, image, meta in images:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=90)
            sink.write({"__key__": key, "jpg": buf.getvalue(), "json": json.dumps(meta).encode()})
    return path


@pytest.fixture(scope="session")
def dupset(shared_data, tmp_path_factory):
    """(shard dir, key -> family): photos + all Yale faces + 80 landmark crops, 6 versions each."""
    from facesift.analysis.dupset import build, list_originals
    root = tmp_path_factory.mktemp("dupset")
    originals = list_originals([("photos", shared_data / "photos", None),
                                ("yale", shared_data / "yalefaces", None),
                                ("lfw", shared_data / "landmarks5" / "lfw_5590", 40),
                                ("net", shared_data / "landmarks5" / "net_7876", 40)])
    families = build(originals, root / "shards" / "dup-000000.tar", seed=0)
    return root / "shards", families


@pytest.fixture(scope="session")
def dup_emb(dupset, tmp_path_factory):
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embed import embed_shards
    out = tmp_path_factory.mktemp("dupemb")
    embed_shards(dupset[0], out, EmbedConfig(), progress=False)
    return out


@pytest.fixture(scope="session")
def dup_redundancy(dup_emb, tmp_path_factory):
    from facesift.analysis.config import RedundancyConfig
    from facesift.analysis.redundancy import run_redundancy
    out = tmp_path_factory.mktemp("dupred")
    summary = run_redundancy(dup_emb, out, RedundancyConfig(), progress=False)
    return out, summary
