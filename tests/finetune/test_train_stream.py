"""The training stream: `steps` batches from chained reshuffled epochs, one loader for the run."""
from __future__ import annotations

import torch

from facesift.finetune.trainer import _loader


def _records(tiny_landmarks, n):
    paths = [line.split()[0] for line in tiny_landmarks.read_text().splitlines()[:n]]
    return [{"path": p, "i": i} for i, p in enumerate(paths)]


def _index(image, rec):
    return torch.tensor(rec["i"]), 0


def test_small_fraction_streams_every_step_from_one_loader(tiny_landmarks):
    """7 records, batch 4, 10 steps: one pass of the loader gives all 10 batches (no epoch end to
    restart a worker on), and every run of 7 consecutive samples is one whole epoch."""
    loader = _loader(_records(tiny_landmarks, 7), _index, 4, 0, seed=3, train=True, steps=10)
    assert len(loader) == 10
    order = torch.cat([x for x, _ in loader]).tolist()
    assert len(order) == 40
    epochs = [order[k:k + 7] for k in range(0, 35, 7)]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1       # reshuffled each epoch


def test_stream_is_seeded_and_workers_do_not_change_it(tiny_landmarks):
    recs = _records(tiny_landmarks, 7)
    order = [torch.cat([x for x, _ in _loader(recs, _index, 4, w, seed=s, train=True, steps=6)]).tolist()
             for s, w in ((1, 0), (1, 1), (2, 0))]
    assert order[0] == order[1] != order[2]


def test_batch_never_exceeds_the_records(tiny_landmarks):
    loader = _loader(_records(tiny_landmarks, 3), _index, 8, 0, seed=0, train=True, steps=4)
    sizes = [len(x) for x, _ in loader]
    assert sizes == [3, 3, 3, 3]


def test_evaluation_reads_each_record_once_in_order(tiny_landmarks):
    loader = _loader(_records(tiny_landmarks, 7), _index, 4, 0, seed=0, train=False)
    assert torch.cat([x for x, _ in loader]).tolist() == list(range(7))
