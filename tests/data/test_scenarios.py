"""Scenarios are pure functions: exact counts, orders and splits on fake labels (no images)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cil_core.data.scenarios import (
    PAPER_CLASS_ORDER,
    build_scenario,
    class_order,
    long_tail_counts,
    shot_groups,
    task_splits,
    thin_to_long_tail,
    validation_split,
)
from cil_core.errors import ConfigError, DataError

METHOD_MD = Path(__file__).resolve().parents[2].parent / "shared" / "METHOD.md"

# CIFAR-100's shape: 500 training and 100 test images per class, class-major like the real file.
CIFAR_TRAIN = np.repeat(np.arange(100), 500)
CIFAR_TEST = np.repeat(np.arange(100), 100)


def cifar(scenario: str, initial: int, tasks: int, **kw):
    return build_scenario(
        CIFAR_TRAIN, CIFAR_TEST, 100, scenario=scenario, initial_classes=initial, total_tasks=tasks, n_max=500, **kw
    )


def original_classes(s, task: int) -> list[int]:
    return [s.class_order[p] for p in s.task_classes[task]]


# ------------------------------------------------------------------ profile


def test_cifar100_lt_profile_counts():
    counts = long_tail_counts(500, 100, 100.0)
    assert counts[0] == 500 and counts[-1] == 5
    assert counts.sum() == 10847
    # Spot values of floor(500 * 0.01 ** (i / 99)), including ones near an integer boundary.
    assert counts[[1, 2, 34, 35, 69, 70, 98]].tolist() == [477, 455, 102, 98, 20, 19, 5]
    assert np.all(np.diff(counts) <= 0)


def test_profile_rho_and_small_k():
    assert long_tail_counts(100, 2, 10.0).tolist() == [100, 10]
    assert long_tail_counts(60, 1).tolist() == [60]
    assert long_tail_counts(500, 100, 1.0).tolist() == [500] * 100
    with pytest.raises(ConfigError, match="rho"):
        long_tail_counts(500, 100, 0.5)


# ------------------------------------------------------------------ order and tasks


def test_paper_order_is_a_permutation_and_matches_method_md():
    assert sorted(PAPER_CLASS_ORDER) == list(range(100))
    if METHOD_MD.is_file():
        text = METHOD_MD.read_text()
        block = re.search(r"uses\):\n```\n(.*?)```", text, re.S)
        assert block is not None
        assert tuple(int(v) for v in block.group(1).split()) == PAPER_CLASS_ORDER


def test_class_order_rules():
    assert class_order(100, "ltio", order_seed=5) == list(range(100))
    assert class_order(100, "lt") == list(PAPER_CLASS_ORDER)
    assert class_order(100, "conv") == list(PAPER_CLASS_ORDER)
    assert class_order(100, "lt", order_seed=3) == np.random.RandomState(3).permutation(100).tolist()
    assert class_order(101, "lt") == np.random.RandomState(1993).permutation(101).tolist()
    with pytest.raises(ConfigError, match="scenario"):
        class_order(100, "shuffled")


def test_task_splits():
    assert task_splits(100, 5, 20) == [5] * 20
    assert task_splits(100, 50, 6) == [50] + [10] * 5
    assert task_splits(100, 50, 11) == [50] + [5] * 10
    assert task_splits(101, 51, 6) == [51] + [10] * 5
    assert task_splits(101, 50, 6) == [50, 11, 10, 10, 10, 10]  # remainder to the earliest
    assert task_splits(10, 10, 1) == [10]
    with pytest.raises(ConfigError):
        task_splits(10, 8, 5)


def test_lt_task_classes_follow_paper_order():
    s = cifar("lt", 5, 20)
    assert original_classes(s, 0) == [68, 56, 78, 8, 23]
    assert original_classes(s, 1) == [84, 90, 65, 74, 76]
    assert original_classes(s, 19) == [67, 29, 49, 57, 33]
    s = cifar("lt", 50, 6)
    assert original_classes(s, 0) == list(PAPER_CLASS_ORDER[:50])
    assert original_classes(s, 1) == [37, 95, 14, 71, 96, 98, 97, 2, 64, 66]
    s = cifar("lt", 50, 11)
    assert original_classes(s, 1) == [37, 95, 14, 71, 96]
    assert [len(t) for t in s.task_classes] == [50] + [5] * 10


def test_ltio_task_classes_are_rank_order():
    assert original_classes(cifar("ltio", 5, 20), 3) == [15, 16, 17, 18, 19]
    assert original_classes(cifar("ltio", 50, 6), 1) == list(range(50, 60))
    assert original_classes(cifar("ltio", 50, 11), 10) == list(range(95, 100))


def test_labels_are_arrival_positions_and_indices_match_tasks():
    s = cifar("lt", 50, 6)
    assert s.label_map[68] == 0 and s.label_map[56] == 1 and s.label_map[33] == 99
    for t, classes in enumerate(s.task_classes):
        pos = s.label_map[CIFAR_TRAIN[s.train_indices[t]]]
        assert set(np.unique(pos)) == set(classes)
        assert set(np.unique(s.label_map[CIFAR_TEST[s.test_indices[t]]])) == set(classes)
        assert len(s.test_indices[t]) == 100 * len(classes)  # test sets stay balanced


# ------------------------------------------------------------------ long-tailed thinning


def test_lt_profile_is_indexed_by_original_id_for_arrays():
    s = cifar("lt", 5, 20)
    by_original = s.counts_before_val[s.label_map]
    assert by_original.tolist() == long_tail_counts(500, 100).tolist()
    # The first task mixes head and tail: class 68 keeps floor(500 * 0.01 ** (68/99)).
    assert s.counts_before_val[:5].tolist() == [long_tail_counts(500, 100)[c] for c in (68, 56, 78, 8, 23)]
    assert s.counts_before_val.sum() == 10847


def test_ltio_puts_the_head_first():
    s = cifar("ltio", 50, 6)
    assert s.counts_before_val.tolist() == long_tail_counts(500, 100).tolist()


def test_conv_keeps_everything():
    s = cifar("conv", 50, 6)
    assert s.counts_before_val.tolist() == [500] * 100
    assert s.train_counts.tolist() == [450] * 100


def test_validation_split_counts_on_cifar100_lt():
    s = cifar("lt", 50, 6)
    before = s.counts_before_val
    held = before - s.train_counts
    # 10% per class, numpy rounding (half to even): 500 -> 50, 25 -> 2, 15 -> 2, 6 -> 1, 5 -> 0.
    assert held.tolist() == np.round(before * 0.1).astype(int).tolist()
    lookup = dict(zip(before.tolist(), held.tolist()))
    assert (lookup[500], lookup[25], lookup[15], lookup[6], lookup[5]) == (50, 2, 2, 1, 0)
    assert held.sum() == 1089 and s.train_counts.sum() == 9758
    train = np.concatenate(s.train_indices)
    val = np.concatenate(s.val_indices)
    assert len(np.intersect1d(train, val)) == 0
    assert len(np.unique(np.concatenate([train, val]))) == 10847


def test_thinning_is_deterministic_and_seeded():
    a = cifar("lt", 50, 6)
    b = cifar("lt", 50, 6)
    for x, y in zip(a.train_indices + a.val_indices, b.train_indices + b.val_indices):
        np.testing.assert_array_equal(x, y)
    c = cifar("lt", 50, 6, lt_seed=1)
    np.testing.assert_array_equal(a.counts_before_val, c.counts_before_val)  # same profile
    assert not np.array_equal(np.concatenate(a.train_indices), np.concatenate(c.train_indices))


def test_thin_reproduces_the_reference_draw():
    # The reference: np.random.seed(0); per class in id order: shuffle its indices, keep the first k.
    labels = np.repeat(np.arange(4), 10)
    counts = [10, 5, 3, 1]
    np.random.seed(0)
    expected = []
    for c, k in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        np.random.shuffle(idx)
        expected.append(idx[:k])
    np.testing.assert_array_equal(thin_to_long_tail(labels, counts, 0), np.sort(np.concatenate(expected)))
    # A dict works too; missing classes keep nothing, asking for more than exists keeps all.
    kept = thin_to_long_tail(labels, {1: 99, 3: 2}, 0)
    assert np.bincount(labels[kept], minlength=4).tolist() == [0, 10, 0, 2]


def test_validation_split_function():
    labels = np.repeat(np.arange(3), [20, 5, 15])
    train, val = validation_split(np.arange(40), labels, 0.1, 7)
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 0, 2]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    train2, val2 = validation_split(np.arange(40), labels, 0.1, 7)
    np.testing.assert_array_equal(val, val2)
    assert validation_split(np.arange(40), labels, 0.0, 7)[1].size == 0


# ------------------------------------------------------------------ image lists (by arrival)

BALANCED_TRAIN = np.repeat(np.arange(100), 600)
BALANCED_TEST = np.repeat(np.arange(100), 50)


def by_arrival(scenario: str, lt_seed: int = 0):
    return build_scenario(
        BALANCED_TRAIN, BALANCED_TEST, 100, scenario=scenario, initial_classes=50, total_tasks=6,
        lt_seed=lt_seed, n_max=600, profile_rule="by_arrival",
    )


def test_by_arrival_lt_shuffles_counts_with_the_seed():
    profile = long_tail_counts(600, 100)
    expected = profile.copy()
    np.random.RandomState(0).shuffle(expected)
    s0 = by_arrival("lt", 0)
    assert s0.counts_before_val.tolist() == expected.tolist()
    s1 = by_arrival("lt", 1)
    assert s1.counts_before_val.tolist() != s0.counts_before_val.tolist()
    assert sorted(s1.counts_before_val.tolist()) == sorted(profile.tolist())


def test_by_arrival_ltio_follows_arrival_rank():
    assert by_arrival("ltio").counts_before_val.tolist() == long_tail_counts(600, 100).tolist()


def test_unequal_classes_keep_min_of_available_and_profile():
    train = np.repeat(np.arange(4), [100, 100, 3, 100])
    s = build_scenario(train, np.arange(4), 4, scenario="ltio", initial_classes=2, total_tasks=2,
                       n_max=100, profile_rule="by_arrival", val_fraction=0.0)
    # Profile 100, 21, 4, 1; class 2 has only 3 images.
    assert s.counts_before_val.tolist() == [100, 21, 3, 1]


def test_already_long_tailed_lists_are_not_thinned():
    counts = long_tail_counts(500, 100)
    train = np.repeat(np.arange(100), counts)
    test = np.repeat(np.arange(100), 50)
    for scenario in ("lt", "ltio"):
        s = build_scenario(train, test, 100, scenario=scenario, initial_classes=50, total_tasks=6,
                           already_long_tailed=True, profile_rule="by_arrival")
        assert s.counts_before_val.sum() == 10847
        assert s.counts_before_val[s.label_map].tolist() == counts.tolist()
    ltio = build_scenario(train, test, 100, scenario="ltio", initial_classes=50, total_tasks=6, already_long_tailed=True)
    assert ltio.counts_before_val[0] == 500 and ltio.counts_before_val[-1] == 5  # head first
    with pytest.raises(ConfigError, match="conv"):
        build_scenario(train, test, 100, scenario="conv", initial_classes=50, total_tasks=6, already_long_tailed=True)


def test_empty_class_is_a_data_error():
    with pytest.raises(DataError, match="class 2"):
        build_scenario(np.array([0, 1, 3]), np.arange(4), 4, scenario="conv", initial_classes=2, total_tasks=2)


# ------------------------------------------------------------------ shot groups


def test_shot_groups_on_cifar100_lt_use_counts_before_validation():
    s = cifar("lt", 50, 6)
    assert np.bincount(shot_groups(s.counts_before_val), minlength=3).tolist() == [35, 35, 30]
    assert np.bincount(shot_groups(s.train_counts), minlength=3).tolist() != [35, 35, 30]
    assert shot_groups(np.array([101, 100, 20, 19])).tolist() == [0, 1, 1, 2]
    assert s.extra["shot_groups"] == shot_groups(s.counts_before_val).tolist()
