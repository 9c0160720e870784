"""Shards of real face crops (../shared/data/landmarks5, labels ignored) for pretrain tests."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import webdataset as wds


def write_shards(files: list[Path], out: Path, sizes: list[int], corrupt: int = 0) -> list[Path]:
    """Shards with the given sample counts (uneven on purpose); `corrupt` garbage jpgs in the first."""
    out.mkdir(parents=True, exist_ok=True)
    paths, it = [], iter(files)
    for s, size in enumerate(sizes):
        path = out / f"faces-{s:06d}.tar"
        with wds.TarWriter(str(path)) as w:
            if s == 0:
                for c in range(corrupt):
                    w.write({"__key__": f"bad{c}_0", "jpg": b"\xff\xd8 not a jpeg"})
            for i in range(size):
                f = next(it)
                w.write({"__key__": f"{f.parent.name}-{f.stem}_0", "jpg": f.read_bytes()})
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def face_files(shared_data: Path) -> list[Path]:
    root = shared_data / "landmarks5"
    files = sorted(root.glob("lfw_5590/*.jpg"))[:600] + sorted(root.glob("net_7876/*.jpg"))[:600]
    if len(files) < 1000:
        pytest.skip("landmarks5 crops not found")
    return files


@pytest.fixture(scope="session")
def face_shards(face_files, tmp_path_factory) -> Path:
    """1,200 real 80×80 face crops in 4 uneven shards (no index.json: counted from the tars)."""
    out = tmp_path_factory.mktemp("face_shards")
    write_shards(face_files, out, [500, 300, 250, 150])
    return out
