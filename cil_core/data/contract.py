"""The data contract between data sets, scenarios and the training engine.

Everything the engine needs from a data set is in :class:`LoadedDataset`; everything it
needs from a scenario (which images each task trains on, in which order classes arrive)
is in :class:`Scenario`. Labels inside the engine are *arrival positions*: class ``k`` is
the ``k``-th class to arrive, so "old classes" is always the slice ``[:n_old]`` (the PyCIL
convention) and per-class work is plain tensor indexing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where images are made, so specs load without it
    import torch


@dataclass(frozen=True)
class DatasetProtocol:
    """Per-data-set training defaults from the paper's protocol (METHOD.md, section 1)."""

    backbone: str
    epochs: int
    lr_milestones: tuple[int, ...]
    weight_decay: float
    image_size: int
    lr: float = 0.1
    batch_size: int = 128
    augment: str = "reference"  # the training augmentation (cil_core.data.augment.AUGMENTS)
    # Execution defaults (README "Execution"): bf16 autocast, channels-last memory format.
    amp: bool = False
    channels_last: bool = False


@dataclass
class ImageSplit:
    """One split (train or test) of a data set.

    Exactly one of ``images`` (uint8 tensor N x C x H x W, decoded once, kept in memory or
    on the device) and ``paths`` (absolute file paths, decoded on the fly by a DataLoader)
    is set. ``labels`` are the data set's original class ids.
    """

    labels: np.ndarray
    images: torch.Tensor | None = None
    paths: list[str] | None = None

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def tensor_resident(self) -> bool:
        return self.images is not None


@dataclass
class LoadedDataset:
    """A data set ready for a run: both splits plus what the protocol needs to know."""

    name: str
    num_classes: int
    train: ImageSplit
    test: ImageSplit
    protocol: DatasetProtocol
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # True where the training list on disk is long-tailed already (Food-101-LT,
    # tinyimagenet100_lt): the `lt`/`ltio` scenarios then do not thin it again.
    already_long_tailed: bool = False
    # The balanced per-class count the long-tailed profile starts from (500 for CIFAR-100).
    n_max: int = 0
    # Which family of augmentation applies: "cifar" (pad + random-resized crop at native
    # size) or "imagenet" (random-resized crop to 224 from a file).
    augment_family: str = "cifar"
    class_names: list[str] | None = None
    # Short-side resize applied before the crops of the PIL pipelines (train and test), as
    # the reference's ``resize``: 224 for Food-101 and ImageNet-1k; None elsewhere
    # (ImageNet-Subset's test then uses Resize(256) + CentreCrop(224)).
    resize: int | None = None


@dataclass
class Scenario:
    """The task structure of one run, in arrival order.

    ``label_map[original_id] = arrival position``; ``class_order[k]`` is the original id of
    the k-th class to arrive. Index arrays index into the *training split* of the data set
    (``train_indices``/``val_indices``) or its *test split* (``test_indices``).
    """

    class_order: list[int]
    label_map: np.ndarray
    task_classes: list[list[int]]  # arrival positions of each task's classes
    train_indices: list[np.ndarray]  # per task, after the long-tail thinning and the val hold-out
    val_indices: list[np.ndarray]  # per task, the 10% per-class hold-out
    test_indices: list[np.ndarray]  # per task
    train_counts: np.ndarray  # per arrival position, training images after the hold-out
    counts_before_val: np.ndarray  # per arrival position, after thinning, before the hold-out
    extra: dict = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    def classes_seen(self, task: int) -> int:
        return sum(len(c) for c in self.task_classes[: task + 1])
