"""data.pose_balance: the yaw histogram flattens (within the cap), the stream stays
deterministic and resumes exactly, and every rank still gets the same number of batches."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest
import webdataset as wds

from facesift.common.config import resolve
from facesift.pretrain.config import CropConfig, DataConfig, PretrainConfig
from facesift.pretrain.data import StreamState, make_loader
from facesift.pretrain.posebalance import keep_sample, pose_table, yaw_bin, yaw_counts
from facesift.shards.index import shard_urls

CROPS = CropConfig(nmb_crops=[1, 1], size_crops=[16, 8])
BINS = 6


def _yaws(n: int, seed: int = 0) -> list[float | None]:
    """A web-like pose mix: most faces frontal, few in profile, some without a yaw."""
    rng = random.Random(seed)
    out: list[float | None] = []
    for _ in range(n):
        r = rng.random()
        out.append(None if r < 0.05 else rng.uniform(-15, 15) if r < 0.75 else rng.uniform(-45, 45)
                   if r < 0.95 else rng.choice([-1, 1]) * rng.uniform(60, 89))
    return out


@pytest.fixture(scope="module")
def pose_shards(face_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("pose_shards")
    yaws = _yaws(800)
    by_key = {}
    for s in range(4):
        with wds.TarWriter(str(out / f"faces-{s:06d}.tar")) as w:
            for i in range(200):
                k = s * 200 + i
                key = f"f{k:05d}_0"
                meta = {"key": key} if yaws[k] is None else {"key": key, "yaw": yaws[k]}
                w.write({"__key__": key, "jpg": face_files[k].read_bytes(), "json": json.dumps(meta).encode()})
                by_key[key] = yaws[k]
    return out, by_key


def _data(**kw) -> DataConfig:
    base = dict(batch_size=8, workers=0, shuffle_buffer=16, resampled=True, pose_balance=True, pose_cap=4.0)
    base.update(kw)
    return DataConfig(**base)


def _bins(keys, by_key) -> Counter:
    return Counter("none" if by_key[k] is None else yaw_bin(by_key[k], BINS) for k in keys)


def test_table_flattens_within_the_cap():
    counts, missing = [10, 100, 700, 700, 100, 10], 50
    table = pose_table(counts, missing, cap=4.0)
    kept = [c * k for c, k in zip(counts, table.keep)]
    weights = [k / table.keep_missing for k in table.keep]        # relative to the natural rate
    assert max(weights) == pytest.approx(4.0)                     # the rare bins hit the cap ...
    assert kept[0] == pytest.approx(kept[5]) and kept[1] == pytest.approx(kept[4])
    assert kept[2] / kept[0] < 700 / 10 / 10                      # ... and the frontal excess shrinks > 10x
    assert max(table.keep) == pytest.approx(1.0) and 0 < table.kept_share() < 1
    uncapped = pose_table(counts, 0, cap=1000.0)                  # no cap: exactly flat
    flat = [c * k for c, k in zip(counts, uncapped.keep)]
    assert max(flat) == pytest.approx(min(flat))
    with pytest.raises(ValueError, match="no sample .* has a yaw"):
        pose_table([0] * 6, 20, cap=4.0)


def test_keep_is_a_pure_function_of_seed_epoch_and_key():
    table = pose_table([100, 10], 0, cap=4.0)
    keys = [f"k{i}" for i in range(2000)]
    a = [keep_sample(table, k, -40.0, 1, 0) for k in keys]
    assert a == [keep_sample(table, k, -40.0, 1, 0) for k in keys]
    assert a != [keep_sample(table, k, -40.0, 1, 1) for k in keys]        # another epoch draws again
    assert sum(a) / len(a) == pytest.approx(table.keep[0], abs=0.03)
    assert all(keep_sample(table, k, 40.0, 1, 0) for k in keys)          # the rare bin: always kept


def test_stream_flattens_the_yaw_histogram(pose_shards):
    root, by_key = pose_shards
    urls = shard_urls(root)
    counts, missing = yaw_counts(urls, BINS)
    assert sum(counts) + missing == 800 and missing == sum(v is None for v in by_key.values())
    raw = _bins(list(by_key), by_key)
    batches = list(make_loader(urls, CROPS, _data(), 8, seed=0, epoch=0, steps=60,
                               pose=pose_table(counts, missing, 4.0)))
    assert len(batches) == 60 and all(len(b["keys"]) == 8 for b in batches)
    got = _bins([k for b in batches for k in b["keys"]], by_key)
    frontal = [yaw_bin(0.0, BINS) - 1, yaw_bin(0.0, BINS)]   # the two bins around 0
    share = lambda c: sum(c[b] for b in frontal) / sum(c.values())  # noqa: E731
    assert share(raw) > 0.7 and share(got) < 0.5
    profile = [0, BINS - 1]
    assert sum(got[b] for b in profile) / 480 > 2 * sum(raw[b] for b in profile) / 800


def test_balanced_stream_is_deterministic_and_resumes_exactly(pose_shards):
    root, _ = pose_shards
    urls = shard_urls(root)
    counts, missing = yaw_counts(urls, BINS)
    table = pose_table(counts, missing, 4.0)
    data = _data(workers=2)
    full = list(make_loader(urls, CROPS, data, 8, seed=3, epoch=1, steps=5, pose=table))
    again = list(make_loader(urls, CROPS, data, 8, seed=3, epoch=1, steps=5, pose=table))
    assert [b["keys"] for b in full] == [b["keys"] for b in again]
    state = StreamState(num_workers=2)
    for b in full[:3]:
        state.update(b)
    rest = list(make_loader(urls, CROPS, data, 8, seed=3, epoch=1, steps=5, state=state, pose=table))
    assert [b["keys"] for b in rest] == [b["keys"] for b in full[3:]]


def test_every_rank_gets_the_same_number_of_batches(pose_shards):
    root, _ = pose_shards
    urls = shard_urls(root)
    counts, missing = yaw_counts(urls, BINS)
    table = pose_table(counts, missing, 4.0)
    for resampled in (True, False):
        sizes = [len(list(make_loader(urls, CROPS, _data(resampled=resampled), 8, seed=0, epoch=0, steps=7,
                                      rank=r, world_size=3, pose=table))) for r in range(3)]
        assert sizes == [7, 7, 7]


def test_out_of_range_options_are_refused():
    for bad in ("data.pose_cap=0.5", "data.pose_bins=1"):
        with pytest.raises(ValueError, match=bad.split("=")[0].split(".")[1]):
            resolve(PretrainConfig, None, [bad], section="pretrain")


def test_trainer_writes_the_table_and_refuses_shards_without_yaw(pose_shards, face_shards, tmp_path, capsys):
    from facesift.cli import main as cli_main
    from facesift.pretrain.train import train
    from tests.pretrain.test_train import tiny
    root, _ = pose_shards
    cfg = tiny(root, tmp_path / "a", max_steps=2)
    cfg.data.pose_balance, cfg.data.workers = True, 0
    assert train(cfg)["steps"] == 2
    table = json.loads((tmp_path / "a" / "pose_balance.json").read_text())
    assert sum(table["counts"]) + table["missing"] == 800 and 0 < table["kept_share"] < 1
    # face_shards carry no json: refused before any work, with the reason
    rc = cli_main(["pretrain", "--shards", str(face_shards), "--out", str(tmp_path / "b"),
                   "--set", "data.pose_balance=true", "--set", "device=cpu"])
    assert rc == 2 and "has a yaw" in capsys.readouterr().err
    assert not (tmp_path / "b" / "last.pt").exists()
