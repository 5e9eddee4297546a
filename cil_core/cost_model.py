"""The cost model behind ``--dry-run``'s hour estimate: images processed per trial x seconds per image.

Torch-free (the orchestrator's dry run imports it without torch). One trial's cost is

    hours = sum over tasks t of
              epochs x S_t x (1 + F x teacher)          main phase: train S_t images, forward the teacher
            + E_t x (1 + F x teacher)                    extra stages (EEIL's balanced fine-tuning, LUCIR's CBF)
            + F x N_t x memory                           herding: features of the new classes' images
            + F x T_t                                    evaluation on the test images of the seen classes
          x seconds_per_image(backbone, precision, device kind) x (image_size / reference size)^2 / 3600

with ``S_t`` the task's training set (its new classes' images after the validation hold-out
plus the exemplars of the old classes), ``N_t`` the new classes' images, ``T_t`` the seen
classes' test images, and ``F = 1/3`` the cost of a forward pass relative to a training step
(forward + backward ~ 3 forwards). Per-task sizes follow the scenario: ``conv`` n_max per
class, ``lt``/``ltio`` the exponential profile (ltio: head classes first; lt: shuffled, so each
task gets the mean count per class); ``tinyimagenet100_lt`` is that profile on disk.

Not counted (each under 5 % of a trial at the protocols' settings): BiC's bias stage (two
parameters on the validation exemplars), GVAlign's classifier alignment on sampled features,
the 2-stage recipe's classifier re-training on frozen features, data loading and start-up.

Per-image figures: seconds per training image (forward + backward + SGD) of one process with
one torch thread on the CPU, or of the whole GPU; measured by ``benchmarks/epoch_throughput.py``
(CPU: its "CPU s per 1000 images"; GPU: a ``benchmarks/gpu_check.sh`` report, README "Cost
model"). A figure still ``None`` is pending: :func:`trial_hours` then returns ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import RunConfig

FORWARD_FRACTION = 1.0 / 3.0

# Approaches that run a frozen teacher forward on every training batch (needs_teacher).
TEACHER_APPROACHES = frozenset({"dgr", "lwf", "icarl", "eeil", "bic", "lucir", "podnet", "gvalign", "eeil_2stage",
                                "lucir_2stage", "podnet_2stage", "lucir_gvalign", "podnet_gvalign"})
# Approaches without an exemplar memory: train on everything seen (joint) or nothing old (none).
JOINT_APPROACHES = frozenset({"joint"})


@dataclass(frozen=True)
class DatasetSize:
    """What the cost depends on: classes, training images of the largest class (before the
    hold-out), test images per class, and whether the list on disk is already long-tailed."""

    num_classes: int
    n_max: int
    test_per_class: int
    already_long_tailed: bool = False
    reference_size: int = 32  # the image size the per-image figures are quoted at for this data set's backbone


DATASET_SIZES: dict[str, DatasetSize] = {
    "cifar100": DatasetSize(100, 500, 100),
    "tinyimagenet100_lt": DatasetSize(100, 500, 50, already_long_tailed=True),
    "imagenet_subset": DatasetSize(100, 1300, 50),
    "imagenet_1000": DatasetSize(1000, 1300, 50),
    "Food101": DatasetSize(101, 750, 250),
    "digits": DatasetSize(10, 126, 54),
    "synthetic": DatasetSize(20, 60, 20),
}

# Seconds per training image at ``REFERENCE_SIZE[backbone]`` px: {(backbone, precision): s}.
# CPU: benchmarks/epoch_throughput.py --compare precision, 1 torch thread, CPU seconds per
# image (2026-12-02, AMD EPYC with AVX-512 BF16, benchmarks/README.md). None: pending.
REFERENCE_SIZE = {"resnet8": 32, "resnet20": 32, "resnet32": 32, "convnet": 8, "resnet18": 224}
CPU_SECONDS_PER_IMAGE: dict[tuple[str, str], float | None] = {
    ("resnet8", "fp32"): 2.3e-3,
    ("resnet8", "bf16"): 0.9e-3,
    ("resnet32", "fp32"): 7.5e-3,
    ("resnet32", "bf16"): 3.5e-3,
    ("resnet20", "fp32"): None,
    ("resnet20", "bf16"): None,
    ("convnet", "fp32"): None,
    ("convnet", "bf16"): None,
    ("resnet18", "fp32"): None,
    ("resnet18", "bf16"): None,
}
# GPU: pending a benchmarks/gpu_check.sh report (full-epoch img/s of epoch_precision for
# ResNet-32; resnet18_224_loader for ResNet-18 at 224 px): seconds per image = 1 / img/s.
GPU_SECONDS_PER_IMAGE: dict[tuple[str, str], float | None] = {key: None for key in CPU_SECONDS_PER_IMAGE}


def long_tail_profile(n_max: int, num_classes: int, rho: float) -> list[int]:
    """The exponential profile of ``cil_core.data.scenarios.long_tail_counts`` (a test keeps the two equal)."""
    if num_classes == 1:
        return [int(n_max)]
    factor, denom = 1.0 / float(rho), float(num_classes - 1)
    return [int(float(n_max) * (factor ** (i / denom))) for i in range(num_classes)]


def _after_holdout(count: float, fraction: float) -> float:
    return count - round(count * fraction)


def task_images(config: "RunConfig", size: DatasetSize) -> list[tuple[int, float, float]]:
    """Per task ``(classes, training images of its new classes after the hold-out, test images)``."""
    c = size.num_classes
    splits = [config.initial_classes] + _later_tasks(c - config.initial_classes, config.total_tasks - 1)
    if config.scenario == "conv" and not size.already_long_tailed:
        counts = [float(size.n_max)] * c
    else:
        profile = [float(n) for n in long_tail_profile(size.n_max, c, config.rho)]
        # ltio: classes arrive head first; lt: a shuffled order, so every class gets the mean.
        counts = profile if config.scenario == "ltio" else [sum(profile) / c] * c
    out, start = [], 0
    for k in splits:
        train = sum(_after_holdout(n, config.val_fraction) for n in counts[start:start + k])
        out.append((k, train, float(k * size.test_per_class)))
        start += k
    return out


def _later_tasks(classes: int, tasks: int) -> list[int]:
    """The classes of tasks 2.. (equal shares, the remainder spread over the first ones)."""
    if tasks <= 0:
        return []
    base, extra = divmod(classes, tasks)
    return [base + (1 if i < extra else 0) for i in range(tasks)]


def images_processed(config: "RunConfig") -> float | None:
    """Training-image equivalents (forward+backward = 1, forward = 1/3) of one trial of the
    resolved ``config``; None for a data set of unknown size (``imagelist``)."""
    size = DATASET_SIZES.get(config.dataset)
    if size is None:
        return None
    approach = config.approach
    teacher = approach in TEACHER_APPROACHES
    uses_memory = approach not in JOINT_APPROACHES and config.memory_per_class > 0
    options = dict(config.options.get(approach, {})) if config.options else {}
    epochs = int(config.epochs or 0)
    total, seen_classes, seen_train, exemplars = 0.0, 0, 0.0, 0.0
    for task, (k, new_train, _) in enumerate(task_images(config, size)):
        seen_classes += k
        seen_train += new_train
        if approach in JOINT_APPROACHES:
            train = seen_train
        else:
            train = new_train + (exemplars if uses_memory else 0.0)
        step = 1.0 + (FORWARD_FRACTION if teacher and task > 0 else 0.0)
        total += epochs * train * step
        total += _extra_stage_images(approach, options, epochs, task, seen_classes, config.memory_per_class) * step
        if uses_memory:
            total += FORWARD_FRACTION * new_train  # herding on the new classes' features
            exemplars += min(config.memory_per_class * k, new_train)
        total += FORWARD_FRACTION * seen_classes * size.test_per_class  # evaluation
    return total


def _extra_stage_images(approach: str, options: dict, epochs: int, task: int, seen_classes: int, memory: int) -> float:
    """Images of an approach's extra training stage on ``task`` (0 if none or not counted)."""
    if approach in ("eeil", "eeil_2stage") and task > 0:
        ft = options.get("finetune_epochs")
        ft = ft if ft is not None else max(1, round(30 * epochs / 40))  # methods._building_blocks.scaled_epochs(30, 40, epochs)
        return float(ft) * memory * seen_classes  # balanced fine-tuning on memory-sized classes
    if approach.startswith("lucir") and task > 0:
        return float(options.get("cbf_epochs", 0) or 0) * memory * seen_classes
    return 0.0


def seconds_per_image(backbone: str, precision: str, image_size: int, device_kind: str) -> float | None:
    """Seconds per training image of ``backbone`` at ``image_size`` px, or None while pending."""
    table = CPU_SECONDS_PER_IMAGE if device_kind == "cpu" else GPU_SECONDS_PER_IMAGE
    figure = table.get((backbone, precision))
    if figure is None:
        return None
    reference = REFERENCE_SIZE.get(backbone, image_size)
    return figure * (image_size / reference) ** 2


def trial_hours(config: "RunConfig", device_kind: str) -> float | None:
    """Estimated hours of one trial of the resolved ``config`` on ``device_kind`` ("cpu": one
    process with one torch thread; "gpu": one whole GPU). None when the data set's size or the
    backbone's per-image figure for that device and precision is not known yet."""
    if device_kind not in ("cpu", "gpu"):
        raise ValueError(f"device_kind must be 'cpu' or 'gpu', got {device_kind!r}")
    images = images_processed(config)
    if images is None or config.backbone is None or config.image_size is None:
        return None
    per_image = seconds_per_image(config.backbone, "bf16" if config.amp else "fp32", config.image_size, device_kind)
    if per_image is None:
        return None
    return images * per_image / 3600.0
