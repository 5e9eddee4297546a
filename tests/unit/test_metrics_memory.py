"""Metrics against hand computations; herding against a literal one-class-at-a-time loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cil_core import metrics as M
from cil_core.memory import ExemplarMemory, herding_select


def test_average_incremental_accuracy_is_unweighted_task_mean():
    acc = [[80.0], [60.0, 40.0], [50.0, 30.0, 10.0]]
    # per step task means: 80, 50, 30 -> 53.333
    assert M.task_average(acc) == [80.0, 50.0, 30.0]
    assert M.average_incremental_accuracy(acc) == pytest.approx(160.0 / 3)


def test_forgetting_by_hand():
    acc = [[80.0], [60.0, 40.0], [50.0, 30.0, 10.0]]
    # task 0: best 80 -> 50 (30); task 1: best 40 -> 30 (10) -> 20
    assert M.forgetting(acc) == pytest.approx(20.0)
    assert M.forgetting([[70.0]]) == 0.0


def test_summary_distinguishes_seen_accuracy_from_task_average():
    acc = [[80.0], [60.0, 40.0]]
    acc_seen = [80.0, 45.0]  # unequal task sizes: weighted != unweighted
    s = M.summarise(acc, acc_seen)
    assert s["avg_incremental_accuracy"] == pytest.approx(65.0)
    assert s["avg_incremental_accuracy_seen"] == pytest.approx(62.5)
    assert s["last_accuracy"] == 45.0


def test_shot_groups_thresholds():
    counts = np.array([500, 101, 100, 20, 19, 5])
    assert M.shot_groups(counts).tolist() == [0, 0, 1, 1, 2, 2]
    acc = M.shot_accuracy(np.array([5, 5, 0, 0, 1, 1]), np.array([10, 10, 10, 10, 10, 10]), M.shot_groups(counts))
    assert acc == {"many": 50.0, "medium": 0.0, "few": 10.0}


def _herding_one_class(feats: torch.Tensor, m: int) -> list[int]:
    feats = torch.nn.functional.normalize(feats, dim=1)
    mu = feats.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    for k in range(1, m + 1):
        best, best_d = None, float("inf")
        for i in range(len(feats)):
            if i in chosen:
                continue
            d = (mu - (running + feats[i]) / k).norm().item()
            if d < best_d:
                best, best_d = i, d
        chosen.append(best)
        running += feats[best]
    return chosen


def test_batched_herding_equals_per_class_loop():
    torch.manual_seed(0)
    sizes = {0: 30, 1: 7, 2: 25}
    feats = torch.randn(sum(sizes.values()), 5)
    labels = torch.cat([torch.full((n,), c) for c, n in sizes.items()])
    perm = torch.randperm(len(labels))
    feats, labels = feats[perm], labels[perm]
    got = herding_select(feats, labels, per_class=10)
    for c, n in sizes.items():
        rows = torch.nonzero(labels == c).flatten()
        if n <= 10:
            assert sorted(got[c].tolist()) == sorted(rows.tolist())
        else:
            expected = rows[_herding_one_class(feats[rows], 10)]
            assert got[c].tolist() == expected.tolist()


def test_memory_state_round_trip():
    mem = ExemplarMemory(per_class=3)
    mem.add({1: np.array([5, 6, 7]), 0: np.array([1, 2])})
    other = ExemplarMemory(per_class=0)
    other.load_state_dict(mem.state_dict())
    assert other.indices().tolist() == [1, 2, 5, 6, 7]
    assert other.counts(3).tolist() == [2, 3, 0]
