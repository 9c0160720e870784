"""Fixtures shared by the analysis tests: the known-duplicate sets built from ../shared/data
(`analysis.dupset`: the issue #13 near-duplicate set and the hard-negative set), stored the way
`curate --detector none` stores photos, their embeddings and one default redundancy run each
(built once per session: the tests share the cost)."""
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
def photo_faces(shared_data):
    pytest.importorskip("facenet_pytorch")
    from facesift.knownsets import photo_faces as detect_faces
    return detect_faces(shared_data)


def _known_set(items, root: Path):
    """(shard dir, embed dir, key -> family) of a known set: written, then embedded with the defaults."""
    from facesift.analysis.config import EmbedConfig
    from facesift.analysis.embed import embed_shards
    from facesift.knownsets import store_known_set
    shards, families = store_known_set(items, root)
    embed_shards(shards, root / "emb", EmbedConfig(), progress=False)
    return shards, root / "emb", families


@pytest.fixture(scope="session")
def neardup_set(shared_data, tmp_path_factory):
    """The issue #13 set: 1,000 landmark crops + 567 copies with fixed edits (929 true pairs)."""
    from facesift.analysis.dupset import neardup_items
    return _known_set(neardup_items(shared_data), tmp_path_factory.mktemp("neardup"))


@pytest.fixture(scope="session")
def hardneg_set(shared_data, photo_faces, tmp_path_factory):
    """Yale frames + photo faces + 200 crops, 40 % of them copied with held-out edits."""
    from facesift.analysis.dupset import hard_negative_items
    return _known_set(hard_negative_items(shared_data, photo_faces), tmp_path_factory.mktemp("hardneg"))


def _default_run(emb: Path, out: Path):
    from facesift.analysis.config import RedundancyConfig
    from facesift.analysis.redundancy import run_redundancy
    return out, run_redundancy(emb, out, RedundancyConfig(), progress=False)


@pytest.fixture(scope="session")
def neardup_run(neardup_set, tmp_path_factory):
    return _default_run(neardup_set[1], tmp_path_factory.mktemp("neardup-red"))


@pytest.fixture(scope="session")
def hardneg_run(hardneg_set, tmp_path_factory):
    return _default_run(hardneg_set[1], tmp_path_factory.mktemp("hardneg-red"))
