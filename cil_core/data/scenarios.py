"""Scenarios as pure functions: labels and a config in, per-task index lists out.

Nothing here touches an image or torch, so the rules that decide *which* images a run
trains on (the long-tailed profile, the class order, the task split, the validation
hold-out) are tested exactly, in milliseconds, without a download (METHOD.md, section 1).

Randomness is always a local ``np.random.RandomState(seed)``: never the global numpy state,
which the training seed owns, so changing ``seed`` never changes the data a run sees and
changing ``lt_seed`` or ``order_seed`` changes only what they name.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .contract import Scenario

# The fixed class order every LT-CIL paper uses for CIFAR-100 and ImageNet-Subset
# (METHOD.md; PODNet's / the LT-CIL reference code's ``class_order``), copied verbatim.
PAPER_CLASS_ORDER: tuple[int, ...] = (
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85, 19, 17, 50,
    28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96,
    98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46, 62, 69,
    36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
)  # fmt: skip

# The seed PODNet and the LT-CIL code use to shuffle classes when no fixed order is given.
DEFAULT_ORDER_SEED = 1993

SCENARIO_NAMES = ("conv", "lt", "ltio")
PROFILE_RULES = ("by_original_id", "by_arrival")

# Shot groups (METHOD.md, Metrics): many > 100 training images, medium 20..100, few < 20.
MANY_SHOT_MIN = 101
FEW_SHOT_MAX = 19


def long_tail_counts(n_max: int, num_classes: int, rho: float = 100.0) -> np.ndarray:
    """Per-rank training counts of the exponential long-tailed profile.

    Rank ``i`` of ``K`` keeps ``floor(n_max * (1/rho) ** (i / (K - 1)))`` images, so rank 0
    keeps ``n_max`` and rank ``K-1`` keeps ``n_max / rho`` (CIFAR-100-LT: 500 ... 5, 10,847
    in all). The float expression is evaluated in the same order and precision (IEEE
    double) as the reference's ``int(img_max * (imb_factor ** (i / (K - 1.0))))`` so that
    counts sitting on an integer boundary floor identically.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if rho < 1.0:
        raise ConfigError(f"rho (the imbalance ratio) must be >= 1, got {rho}; use 100 for the paper's setting")
    if num_classes == 1:
        return np.array([int(n_max)], dtype=np.int64)
    factor = 1.0 / float(rho)
    denom = float(num_classes - 1)
    return np.array([int(float(n_max) * (factor ** (i / denom))) for i in range(num_classes)], dtype=np.int64)


def class_order(num_classes: int, scenario: str, order_seed: int | None = None) -> list[int]:
    """The original class ids in arrival order.

    - ``ltio``: the identity, so classes arrive head first (rank order), whatever the seed.
    - ``lt`` / ``conv`` with ``order_seed`` given: ``RandomState(order_seed).permutation(K)``,
      for studies over class orders.
    - ``lt`` / ``conv`` without it: the paper's fixed order when ``K == 100`` (CIFAR-100,
      ImageNet-Subset, tinyimagenet100_lt), else ``RandomState(1993).permutation(K)``, the
      seed PODNet / LT-CIL use, so every data set has one documented default order.
    """
    _check_scenario(scenario)
    if scenario == "ltio":
        return list(range(num_classes))
    if order_seed is not None:
        return [int(c) for c in np.random.RandomState(order_seed).permutation(num_classes)]
    if num_classes == len(PAPER_CLASS_ORDER):
        return list(PAPER_CLASS_ORDER)
    return [int(c) for c in np.random.RandomState(DEFAULT_ORDER_SEED).permutation(num_classes)]


def task_splits(num_classes: int, initial_classes: int, total_tasks: int) -> list[int]:
    """Number of classes per task: ``initial_classes`` first, the rest spread evenly.

    The remainder of ``(K - initial) / (tasks - 1)`` goes one class each to the earliest
    incremental tasks, as the reference's ``cpertask`` does (``51 6`` on 101 classes:
    51, 10, 10, 10, 10, 10; ``50 6`` on 101: 50, 11, 10, 10, 10, 10).
    """
    if total_tasks < 1:
        raise ConfigError(f"total_tasks must be at least 1, got {total_tasks}")
    if total_tasks == 1:
        if initial_classes != num_classes:
            raise ConfigError(
                f"one task must hold all {num_classes} classes; got initial_classes={initial_classes}"
            )
        return [num_classes]
    remaining = num_classes - initial_classes
    if initial_classes < 1 or remaining < total_tasks - 1:
        raise ConfigError(
            f"cannot split {num_classes} classes into a first task of {initial_classes} and "
            f"{total_tasks - 1} more non-empty tasks; lower initial_classes or total_tasks"
        )
    base, extra = divmod(remaining, total_tasks - 1)
    return [initial_classes] + [base + (1 if t < extra else 0) for t in range(total_tasks - 1)]


def thin_to_long_tail(
    labels: np.ndarray, counts_by_class: Mapping[int, int] | np.ndarray | Sequence[int], seed: int
) -> np.ndarray:
    """Indices (sorted) of a seeded random subset keeping ``counts_by_class[c]`` images of class c.

    Classes are visited in original-id order with one ``RandomState(seed)``; each class's
    indices are shuffled and the first ``k`` kept. With seed 0 on CIFAR-100 this is exactly
    the reference's ``np.random.seed(0)`` + ``np.random.shuffle(idx); idx[:k]``, so the same
    images are kept. A class asked for more than it has keeps all of them.
    """
    labels = np.asarray(labels)
    if isinstance(counts_by_class, Mapping):
        wanted = dict((int(k), int(v)) for k, v in counts_by_class.items())
    else:
        wanted = {c: int(v) for c, v in enumerate(np.asarray(counts_by_class))}
    rng = np.random.RandomState(seed)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    classes, starts = np.unique(sorted_labels, return_index=True)
    ends = np.append(starts[1:], len(labels))
    kept: list[np.ndarray] = []
    for c, s, e in zip(classes.tolist(), starts.tolist(), ends.tolist()):
        if c not in wanted:
            continue
        idx = order[s:e].copy()
        rng.shuffle(idx)
        kept.append(idx[: max(0, wanted[c])])
    if not kept:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(kept)).astype(np.int64)


def validation_split(
    indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(n * fraction)`` images of each class (FACIL's 10% per class).

    ``labels`` is the whole split's label array (``labels[indices]`` are the candidates'
    labels). ``np.round`` rounds half to even, as the reference does, so a class with 5
    images holds out none and one with 15 holds out 2. Classes are visited in label order
    with one ``RandomState(seed)``. Both outputs are sorted.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if fraction <= 0.0 or len(indices) == 0:
        return np.sort(indices), np.zeros(0, dtype=np.int64)
    cand_labels = np.asarray(labels)[indices]
    rng = np.random.RandomState(seed)
    order = np.argsort(cand_labels, kind="stable")
    classes, starts, sizes = np.unique(cand_labels[order], return_index=True, return_counts=True)
    val_mask = np.zeros(len(indices), dtype=bool)
    for s, n in zip(starts.tolist(), sizes.tolist()):
        n_val = int(np.round(n * fraction))
        if n_val > 0:
            pick = rng.choice(n, n_val, replace=False)
            val_mask[order[s + pick]] = True
    return np.sort(indices[~val_mask]), np.sort(indices[val_mask])


def shot_groups(train_counts: np.ndarray) -> np.ndarray:
    """0 many-shot (> 100 training images), 1 medium (20..100), 2 few (< 20), per class.

    Feed it the counts *before* the validation hold-out (``Scenario.counts_before_val``):
    that is the training set the profile defines, and it gives the 35 / 35 / 30 split
    METHOD.md quotes for CIFAR-100-LT (the counts after the hold-out give 33 / 35 / 32).
    """
    counts = np.asarray(train_counts)
    return np.where(counts >= MANY_SHOT_MIN, 0, np.where(counts > FEW_SHOT_MAX, 1, 2)).astype(np.int64)


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIO_NAMES:
        raise ConfigError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIO_NAMES)}")


def target_counts(
    available: np.ndarray,
    order: Sequence[int],
    *,
    scenario: str,
    rho: float,
    lt_seed: int,
    already_long_tailed: bool,
    n_max: int,
    profile_rule: str,
) -> np.ndarray | None:
    """Per original class, how many training images the scenario keeps (None: keep all).

    - ``conv`` and lists already long-tailed on disk: nothing is thinned.
    - ``by_original_id`` (array data sets, the CIFAR-100-LT reference): the profile is indexed
      by the original class id, so class 0 keeps ``n_max`` whatever the order.
    - ``by_arrival`` (balanced image lists, the reference's ``base_dataset``): the profile is
      indexed by arrival position; for ``lt`` the counts are shuffled with
      ``RandomState(lt_seed)`` so each task mixes head and tail classes.

    A class never keeps more than it has (``min(available, profile)``), which is what
    "the per-class count capped by the profile" means for unequal ImageNet classes, and
    never fewer than one image: where ``n_max / rho < 1`` (the small test sets) the formula
    floors to 0, and a class with no training image cannot be learned or counted (its log
    prior would be -inf). The paper's sets (tail 5 and up) are unaffected.
    """
    if scenario == "conv" or already_long_tailed:
        return None
    if profile_rule not in PROFILE_RULES:
        raise ValueError(f"profile_rule must be one of {PROFILE_RULES}, got {profile_rule!r}")
    num_classes = len(available)
    if n_max <= 0:
        n_max = int(available.max()) if num_classes else 0
    profile = long_tail_counts(n_max, num_classes, rho)
    if profile_rule == "by_original_id":
        by_original = profile
    else:
        if scenario == "lt":
            profile = profile.copy()
            np.random.RandomState(lt_seed).shuffle(profile)
        by_original = np.empty(num_classes, dtype=np.int64)
        by_original[np.asarray(order, dtype=np.int64)] = profile
    return np.minimum(available, np.maximum(by_original, 1))


def build_scenario(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    *,
    scenario: str,
    initial_classes: int,
    total_tasks: int,
    rho: float = 100.0,
    lt_seed: int = 0,
    order_seed: int | None = None,
    val_fraction: float = 0.1,
    already_long_tailed: bool = False,
    n_max: int = 0,
    profile_rule: str = "by_original_id",
) -> Scenario:
    """The whole task structure of a run, from the data set's original labels.

    Steps (METHOD.md, section 1): class order -> long-tailed thinning of the training
    split (``target_counts``) -> 10% per-class validation hold-out -> per-task index lists.
    Labels in the result are arrival positions (``label_map[original] = position``); index
    arrays index into the data set's train / test split. The thinning uses
    ``RandomState(lt_seed)``; the hold-out an independent ``RandomState([lt_seed, 1])``.
    """
    _check_scenario(scenario)
    if scenario == "conv" and already_long_tailed:
        raise ConfigError("this data set is long-tailed on disk, so scenario 'conv' (balanced) is impossible; use lt or ltio")
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    sizes = task_splits(num_classes, initial_classes, total_tasks)
    order = class_order(num_classes, scenario, order_seed)
    label_map = np.empty(num_classes, dtype=np.int64)
    label_map[np.asarray(order, dtype=np.int64)] = np.arange(num_classes)

    available = np.bincount(train_labels, minlength=num_classes)
    missing = np.flatnonzero(available == 0)
    if len(missing):
        raise DataError(
            f"class {int(missing[0])} has no training images ({len(missing)} empty classes of {num_classes}); "
            "every label 0..K-1 needs at least one training image: fix the train list"
        )
    wanted = target_counts(
        available,
        order,
        scenario=scenario,
        rho=rho,
        lt_seed=lt_seed,
        already_long_tailed=already_long_tailed,
        n_max=n_max,
        profile_rule=profile_rule,
    )
    kept = np.arange(len(train_labels), dtype=np.int64) if wanted is None else thin_to_long_tail(train_labels, wanted, lt_seed)
    train_idx, val_idx = validation_split(kept, train_labels, val_fraction, [lt_seed, 1])

    train_pos = label_map[train_labels]
    test_pos = label_map[test_labels]
    bounds = np.cumsum([0] + sizes)
    task_of_position = np.repeat(np.arange(len(sizes)), sizes)

    def per_task(idx: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
        tasks = task_of_position[positions[idx]]
        return [idx[tasks == t] for t in range(len(sizes))]

    return Scenario(
        class_order=order,
        label_map=label_map,
        task_classes=[list(range(int(bounds[t]), int(bounds[t + 1]))) for t in range(len(sizes))],
        train_indices=per_task(train_idx, train_pos),
        val_indices=per_task(val_idx, train_pos),
        test_indices=per_task(np.arange(len(test_labels), dtype=np.int64), test_pos),
        train_counts=np.bincount(train_pos[train_idx], minlength=num_classes),
        counts_before_val=np.bincount(train_pos[kept], minlength=num_classes),
        extra={
            "scenario": scenario,
            "profile_rule": profile_rule,
            "rho": float(rho),
            "n_max": int(n_max) if n_max > 0 else int(available.max()),
            "thinned": wanted is not None,
            "already_long_tailed": bool(already_long_tailed),
            "task_sizes": sizes,
            "lt_seed": int(lt_seed),
            "order_seed": order_seed,
            "val_fraction": float(val_fraction),
            "shot_groups": shot_groups(np.bincount(train_pos[kept], minlength=num_classes)).tolist(),
        },
    )
