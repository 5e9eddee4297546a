"""Accuracy-matrix summaries: the one place every reported number is computed.

The papers' "average incremental accuracy" is the reference code's: for each step t the
UNWEIGHTED mean of acc[t][0..t] over tasks, then the mean over all steps, step 0 included.
It differs from the mean of the accuracy over all seen images (``acc_seen``) when tasks have
unequal sizes (LFH splits), so both are recorded and labelled. All values are percentages.
"""

from __future__ import annotations

import numpy as np

SHOT_NAMES = ("many", "medium", "few")


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
