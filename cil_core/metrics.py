"""Accuracy-matrix summaries: the one place every reported number is computed.

The papers' "average incremental accuracy" is the reference code's: for each step t the
UNWEIGHTED mean of acc[t][0..t] over tasks, then the mean over all steps, step 0 included.
It differs from the mean of the accuracy over all seen images (``acc_seen``) when tasks have
unequal sizes (LFH splits), so both are recorded and labelled. All values are percentages.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SHOT_NAMES = ("many", "medium", "few")

# The per-task ``report`` callback's keys (the orchestrator forwards them to Ray Tune), split
# by the data they are measured on, so a search can forward only the validation ones.
TEST_REPORT_KEYS = ("acc_seen", "task_avg_acc", "avg_incremental_accuracy_so_far")
VALIDATION_REPORT_KEYS = ("val_acc_seen", "val_task_avg_acc", "val_avg_incremental_accuracy_so_far")


def task_average(acc_matrix: list[list[float]]) -> list[float]:
    """Per step, the unweighted mean over the tasks seen so far."""
    return [float(np.mean(row)) for row in acc_matrix]


def average_incremental_accuracy(acc_matrix: list[list[float]]) -> float:
    """The paper's headline number (mean over steps of the per-step task average)."""
    return float(np.mean(task_average(acc_matrix)))


def forgetting(acc_matrix: list[list[float]]) -> float:
    """Mean over tasks u < T-1 of (best earlier accuracy on u) - (final accuracy on u).

    Chaudhry et al. (2018)'s definition; 0.0 for a single-task run.
    """
    num_steps = len(acc_matrix)
    if num_steps < 2:
        return 0.0
    final = acc_matrix[-1]
    drops = []
    for u in range(num_steps - 1):
        best = max(acc_matrix[t][u] for t in range(u, num_steps - 1))
        drops.append(best - final[u])
    return float(np.mean(drops))


def shot_groups(train_counts: np.ndarray) -> np.ndarray:
    """0 many (> 100 training images), 1 medium (20-100), 2 few (< 20).

    The thresholds live with the scenario code (one source of truth); feed the counts
    before the validation hold-out, as the paper's 35/35/30 split of CIFAR-100-LT does.
    """
    from .data.scenarios import shot_groups as _groups

    return _groups(train_counts)


def shot_accuracy(per_class_correct: np.ndarray, per_class_total: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
    """Accuracy over the test images of each group's seen classes (None: no such class yet)."""
    out: dict[str, float | None] = {}
    for gid, name in enumerate(SHOT_NAMES):
        mask = groups == gid
        total = per_class_total[mask].sum()
        out[name] = float(100.0 * per_class_correct[mask].sum() / total) if total > 0 else None
    return out


def summarise(acc_matrix: list[list[float]], acc_seen: list[float]) -> dict[str, float | list[float]]:
    return {
        "task_avg_acc": task_average(acc_matrix),
        "avg_incremental_accuracy": average_incremental_accuracy(acc_matrix),
        "avg_incremental_accuracy_seen": float(np.mean(acc_seen)),
        "last_accuracy": float(acc_seen[-1]),
        "forgetting": forgetting(acc_matrix),
    }


# -- validation (the per-class hold-out of the training data) --------------------------------
#
# The hold-out keeps round(10%) of each class's training images, so on a long-tailed set the
# head classes have dozens of validation images and the tail classes 0, 1 or 2. An image-
# weighted accuracy would be the head classes' accuracy; the balanced test set weighs every
# class equally. So every validation figure is CLASS-BALANCED: the mean of the per-class
# accuracies of the classes that have validation images; classes without any are left out
# and counted (``classes_without_images``). A figure with no class to average is None.


def mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def validation_row(correct: np.ndarray, total: np.ndarray, task_classes: Sequence[Sequence[int]]) -> dict[str, Any]:
    """One step's validation figures from per-seen-class correct / image counts.

    ``acc_row[u]``: class-balanced accuracy over task ``u``'s classes that have images (None:
    none has); ``acc_seen``: the same over all seen classes; ``per_class_acc``: None for a
    class without images.
    """
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    per_class: list[float | None] = [
        float(100.0 * c / n) if n > 0 else None for c, n in zip(correct.tolist(), total.tolist())
    ]
    return {
        "acc_row": [mean_or_none([per_class[c] for c in cls]) for cls in task_classes],
        "acc_seen": mean_or_none(per_class),
        "per_class_acc": per_class,
        "images": int(total.sum()),
        "classes_without_images": int((total == 0).sum()),
    }


def summarise_validation(val_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run's validation figures (``val_`` keys of result.json), mirroring the test ones.

    ``val_avg_incremental_accuracy`` is the mean over steps of ``val_task_avg_acc`` (each the
    mean of the step's task accuracies that exist), as ``avg_incremental_accuracy`` is for
    the test set; steps without any validation image are left out of the means.
    """
    task_avg = [mean_or_none(row["acc_row"]) for row in val_rows]
    seen = [row["acc_seen"] for row in val_rows]
    return {
        "val_acc_matrix": [list(row["acc_row"]) for row in val_rows],
        "val_task_avg_acc": task_avg,
        "val_acc_seen": seen,
        "val_avg_incremental_accuracy": mean_or_none(task_avg),
        "val_avg_incremental_accuracy_seen": mean_or_none(seen),
        "val_last_accuracy": seen[-1] if seen else None,
        "val_images": [row["images"] for row in val_rows],
        "val_classes_without_images": [row["classes_without_images"] for row in val_rows],
        "val_per_class_acc": list(val_rows[-1]["per_class_acc"]) if val_rows else [],
    }
