"""The validation hold-out's figures against hand computations: class-balanced over the
classes that have validation images, the others left out and counted."""

from __future__ import annotations

import numpy as np
import pytest

from cil_core import metrics as M


def test_validation_row_is_class_balanced_and_skips_classes_without_images():
    # task 0: classes 0, 1, 2; task 1: classes 3, 4. Class 2 (a tail class) and class 4 have
    # no validation image. Class 0 is a head class with 40 images, class 1 has 1.
    correct = np.array([30, 0, 0, 2, 0])
    total = np.array([40, 1, 0, 4, 0])
    row = M.validation_row(correct, total, [[0, 1, 2], [3, 4]])
    # per class: 75, 0, -, 50, -
    assert row["per_class_acc"] == [75.0, 0.0, None, 50.0, None]
    assert row["acc_row"] == [pytest.approx(37.5), pytest.approx(50.0)]  # (75 + 0) / 2; 50 / 1
    assert row["acc_seen"] == pytest.approx(125.0 / 3)  # (75 + 0 + 50) / 3, not 32 / 45 images
    assert row["images"] == 45 and row["classes_without_images"] == 2


def test_a_task_without_validation_images_is_none_and_left_out_of_the_means():
    first = M.validation_row(np.array([1, 3]), np.array([2, 4]), [[0, 1]])  # 50, 75
    second = M.validation_row(np.array([1, 3, 0]), np.array([2, 4, 0]), [[0, 1], [2]])
    assert first["acc_row"] == [62.5] and second["acc_row"] == [62.5, None]
    summary = M.summarise_validation([first, second])
    assert summary["val_acc_matrix"] == [[62.5], [62.5, None]]
    assert summary["val_task_avg_acc"] == [62.5, 62.5]  # the None task is not averaged in as 0
    assert summary["val_acc_seen"] == [62.5, 62.5]
    assert summary["val_avg_incremental_accuracy"] == 62.5
    assert summary["val_last_accuracy"] == 62.5
    assert summary["val_classes_without_images"] == [0, 1]
    assert summary["val_images"] == [6, 6]


def test_summary_mirrors_the_test_set_definitions():
    rows = [
        M.validation_row(np.array([4]), np.array([5]), [[0]]),  # 80
        M.validation_row(np.array([3, 1]), np.array([5, 5]), [[0], [1]]),  # 60, 20
    ]
    summary = M.summarise_validation(rows)
    acc_matrix = [[80.0], [60.0, 20.0]]
    assert [pytest.approx(row) for row in acc_matrix] == summary["val_acc_matrix"]
    assert summary["val_avg_incremental_accuracy"] == pytest.approx(M.average_incremental_accuracy(acc_matrix))
    assert summary["val_avg_incremental_accuracy_seen"] == pytest.approx((80.0 + 40.0) / 2)


def test_no_validation_image_at_all_gives_none_not_nan():
    row = M.validation_row(np.zeros(3), np.zeros(3), [[0, 1, 2]])
    summary = M.summarise_validation([row])
    assert row["acc_row"] == [None] and row["acc_seen"] is None
    assert summary["val_avg_incremental_accuracy"] is None and summary["val_last_accuracy"] is None
    assert summary["val_classes_without_images"] == [3]
