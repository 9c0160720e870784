"""The streaming loader: equal batches per rank, corrupt samples counted, key lists, exact resume."""
from __future__ import annotations

import torch

from facesift.pretrain.config import CropConfig, DataConfig
from facesift.pretrain.data import StreamState, count_samples, make_loader, read_keys
from facesift.shards.index import shard_urls, write_index
from tests.http_files import serve_directory
from tests.pretrain.conftest import write_shards

CROPS = CropConfig(nmb_crops=[2, 2], size_crops=[32, 16])


def _data(**kw) -> DataConfig:
    base = dict(batch_size=4, workers=0, shuffle_buffer=8, resampled=False)
    base.update(kw)
    return DataConfig(**base)


def test_uneven_shards_give_every_rank_the_same_number_of_batches(face_files, tmp_path):
    urls = [str(p) for p in write_shards(face_files, tmp_path, [5, 60])]
    for resampled in (False, True):
        counts = []
        for rank in (0, 1):
            loader = make_loader(urls, CROPS, _data(resampled=resampled), 4, seed=1, epoch=0, steps=7,
                                 rank=rank, world_size=2)
            batches = list(loader)
            assert all(b["crops"][0].shape == (4, 3, 32, 32) for b in batches)
            assert all(b["crops"][3].shape == (4, 3, 16, 16) for b in batches)
            counts.append(len(batches))
            if not resampled and rank == 0:  # split_by_node: rank 0 owns only the 5-sample shard
                assert {k for b in batches for k in b["keys"]} <= {f"{f.parent.name}-{f.stem}_0" for f in face_files[:5]}
        assert counts == [7, 7]


def test_corrupt_samples_are_skipped_and_counted(face_files, tmp_path):
    urls = [str(p) for p in write_shards(face_files, tmp_path, [8], corrupt=3)]
    (tmp_path / "faces-000001.tar").write_bytes(b"this is not a tar file at all" * 10)
    urls.append(str(tmp_path / "faces-000001.tar"))
    loader = make_loader(urls, CROPS, _data(shuffle_buffer=1), 4, seed=0, epoch=0, steps=2)
    batches = list(loader)
    assert len(batches) == 2
    assert sum(b["bad"] for b in batches) >= 3
    assert not any(k.startswith("bad") for b in batches for k in b["keys"])


def test_key_list_selects_a_subset(face_files, tmp_path):
    urls = [str(p) for p in write_shards(face_files, tmp_path / "s", [30, 30])]
    chosen = [f"{f.parent.name}-{f.stem}_0" for f in face_files[:60:5]]
    keyfile = tmp_path / "keys.txt"
    keyfile.write_text("# split 20%\n" + "\n".join(chosen) + "\n")
    keys = read_keys(keyfile)
    assert count_samples(str(tmp_path / "s"), keys) == 12
    loader = make_loader(urls, CROPS, _data(), 4, seed=0, epoch=0, steps=6, keys=keys)
    seen = [k for b in loader for k in b["keys"]]
    assert len(seen) == 24 and set(seen) == set(chosen)


def test_resumed_stream_continues_exactly(face_shards):
    urls = shard_urls(face_shards)
    data = _data(workers=2, resampled=True, shuffle_buffer=50)
    full = list(make_loader(urls, CROPS, data, 4, seed=3, epoch=2, steps=6))
    state = StreamState(num_workers=2)
    for b in full[:3]:  # an odd step count: the worker round robin has to be rotated
        state.update(b)
    rest = list(make_loader(urls, CROPS, data, 4, seed=3, epoch=2, steps=6, state=state))
    assert len(rest) == 3
    for a, b in zip(full[3:], rest):
        assert a["keys"] == b["keys"]
        for ca, cb in zip(a["crops"], b["crops"]):
            torch.testing.assert_close(ca, cb)
    other_epoch = list(make_loader(urls, CROPS, data, 4, seed=3, epoch=3, steps=1))
    assert other_epoch[0]["keys"] != full[0]["keys"]


def test_device_mode_ships_images_and_boxes_deterministically(face_shards):
    """`augment_on_device`: workers only decode and draw boxes; the same seeds give the same boxes."""
    urls = shard_urls(face_shards)
    data = _data(workers=2, resampled=True, shuffle_buffer=50, augment_on_device=True)
    a = list(make_loader(urls, CROPS, data, 4, seed=5, epoch=0, steps=3))
    b = list(make_loader(urls, CROPS, data, 4, seed=5, epoch=0, steps=3))
    assert len(a) == 3 and "crops" not in a[0]
    assert a[0]["images"].dtype == torch.uint8 and a[0]["images"].shape[:2] == (4, 3)
    assert a[0]["boxes"].shape == (4, 4, 4)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"] and torch.equal(x["boxes"], y["boxes"]) and x["seed"] == y["seed"]
    h, w = a[0]["images"].shape[-2:]
    boxes = torch.cat([x["boxes"] for x in a])
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= w).all() and (boxes[..., 3] <= h).all()


def test_epoch_size_from_index_or_tars(face_shards):
    assert count_samples(str(face_shards)) == 1200


def test_streams_from_an_index_served_over_http(face_files, tmp_path):
    """Shards and index.json on a web server (as on object storage): the epoch size comes from
    the remote index, and the stream equals the one read from the local copy."""
    paths = write_shards(face_files, tmp_path, [20, 12])
    write_index(tmp_path, [{"url": p.name, "nsamples": n} for p, n in zip(paths, [20, 12])])
    with serve_directory(tmp_path) as base:
        remote = f"{base}/index.json"
        assert count_samples(remote) == 32
        urls = shard_urls(remote)
        assert urls == [f"{base}/{p.name}" for p in paths]
        got = list(make_loader(urls, CROPS, _data(workers=2), 4, seed=0, epoch=0, steps=5))
    local = list(make_loader(shard_urls(tmp_path), CROPS, _data(workers=2), 4, seed=0, epoch=0, steps=5))
    assert len(got) == 5 and [b["keys"] for b in got] == [b["keys"] for b in local]
    torch.testing.assert_close(got[-1]["crops"][0], local[-1]["crops"][0])
