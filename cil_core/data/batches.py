"""Engine-facing batch pipelines: ready, normalised device batches with arrival labels.

Two implementations of one small interface (``train_batches``, ``eval_batches``,
``len_batches``):

- :class:`TensorPipeline` for tensor-resident data (CIFAR-100, digits, synthetic, the
  decoded tinyimagenet100_lt): both splits are moved to the device once as uint8, a batch
  is an index into them and :class:`~cil_core.data.augment.DeviceAugment` does the rest on
  the device. Per batch there is no host work and no host synchronisation; the host draws
  one seed per epoch from the caller's generator.
- :class:`LoaderPipeline`: a torch ``DataLoader`` over the image files (or the uint8 tensor
  wrapped as PIL images) with the torchvision transforms of ``augment.py``.

``config.pipeline``: ``auto`` picks the tensor pipeline for tensor-resident data and the
loader otherwise; ``tensor`` on a data set of files is a :class:`ConfigError`.

Batching rule (both pipelines): training batches are shuffled, the last partial batch is
kept, except that a final batch of a single image is merged into the one before it: a
BatchNorm layer in training mode cannot normalise a batch of one (its variance is
undefined), and dropping the image would silently shrink tiny tasks.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import RunConfig
from ..errors import ConfigError
from .augment import DeviceAugment, pil_test_transform, pil_train_transform
from .contract import LoadedDataset

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


class BatchPipeline(Protocol):
    # ``shuffle=False``: batches follow ``indices``' order (a sampler already ordered them).
    def train_batches(
        self, indices: np.ndarray, batch_size: int, generator: torch.Generator, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def eval_batches(
        self, indices: np.ndarray, split: str, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def len_batches(self, n: int, batch_size: int) -> int: ...


def batch_bounds(n: int, batch_size: int, merge_singleton: bool = True) -> list[tuple[int, int]]:
    """``(start, end)`` of each batch of ``n`` items; a trailing batch of one is merged.

    See the module docstring for why (BatchNorm); ``n == 1`` still yields its one batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if merge_singleton and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


def len_batches(n: int, batch_size: int) -> int:
    """Number of training batches :meth:`train_batches` yields for ``n`` images."""
    return len(batch_bounds(n, batch_size))


def _epoch_seed(generator: torch.Generator) -> int:
    """One draw from the caller's generator seeds everything random in an epoch."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def image_size(dataset: LoadedDataset, config: RunConfig) -> int:
    return int(config.image_size or dataset.protocol.image_size)


class TensorPipeline:
    """Tensor-resident data: uint8 images on the device, augmentation on the device."""

    def __init__(self, dataset: LoadedDataset, label_map: np.ndarray, config: RunConfig, device: torch.device) -> None:
        if not dataset.train.tensor_resident or not dataset.test.tensor_resident:
            raise ConfigError(
                f"pipeline 'tensor' needs images in memory, but {dataset.name} is read from files; use --set pipeline=loader"
            )
        self.device = torch.device(device)
        label_map = np.asarray(label_map, dtype=np.int64)
        self.images = {
            "train": dataset.train.images.to(self.device).contiguous(),
            "test": dataset.test.images.to(self.device).contiguous(),
        }
        self.labels = {
            "train": torch.as_tensor(label_map[dataset.train.labels]).to(self.device),
            "test": torch.as_tensor(label_map[dataset.test.labels]).to(self.device),
        }
        self.augment = DeviceAugment(
            mode=config.augment or dataset.protocol.augment, size=image_size(dataset, config), mean=dataset.mean, std=dataset.std, device=self.device
        )

    def len_batches(self, n: int, batch_size: int) -> int:
        return len_batches(n, batch_size)

    def _device_generator(self, generator: torch.Generator) -> torch.Generator:
        if generator.device.type == self.device.type:
            return generator
        return torch.Generator(device=self.device).manual_seed(_epoch_seed(generator))

    def train_batches(
        self, indices: np.ndarray, batch_size: int, generator: torch.Generator, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (unless ``shuffle=False``), augmented, normalised batches of ``indices``
        (training split)."""
        n = len(indices)
        if n == 0:
            return
        gen = self._device_generator(generator)
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.device, non_blocking=True)
        if shuffle:
            idx = idx[torch.randperm(n, generator=gen, device=self.device)]
        images, labels = self.images["train"], self.labels["train"]
        for s, e in batch_bounds(n, batch_size):
            b = idx[s:e]
            yield self.augment(images[b], gen), labels[b]

    def eval_batches(
        self, indices: np.ndarray, split: str, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented, normalised batches of ``indices`` in order."""
        _check_split(split)
        n = len(indices)
        if n == 0:
            return
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.device, non_blocking=True)
        images, labels = self.images[split], self.labels[split]
        for s, e in batch_bounds(n, batch_size, merge_singleton=False):
            b = idx[s:e]
            yield self.augment.eval(images[b]), labels[b]


class _SplitDataset(Dataset):
    """One split as PIL images (from files or from the uint8 tensor), arrival labels."""

    def __init__(self, paths: list[str] | None, images: torch.Tensor | None, labels: np.ndarray, transform) -> None:
        self.paths = paths
        self.images = images.numpy() if images is not None else None
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        if self.images is not None:
            arr = self.images[i]
            img = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
        else:
            with Image.open(self.paths[i]) as f:
                img = f.convert("RGB")
        return self.transform(img), int(self.labels[i])


class _EpochBatches(Sampler[list[int]]):
    """A batch sampler whose batches are set before each epoch, so workers can persist."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return min(8, cpus)


class LoaderPipeline:
    """A DataLoader over PIL images with torchvision transforms (files or wrapped tensors)."""

    def __init__(self, dataset: LoadedDataset, label_map: np.ndarray, config: RunConfig, device: torch.device) -> None:
        self.device = torch.device(device)
        label_map = np.asarray(label_map, dtype=np.int64)
        size = image_size(dataset, config)
        resize = dataset.resize
        if dataset.augment_family == "cifar" and dataset.train.images is not None and resize is None:
            if dataset.train.images.shape[-1] != size:
                resize = size
        train_tf = pil_train_transform(dataset.augment_family, size, dataset.mean, dataset.std, config.augment or dataset.protocol.augment, resize)
        test_tf = pil_test_transform(dataset.augment_family, size, dataset.mean, dataset.std, resize)
        self.workers = config.num_workers if config.num_workers is not None else default_workers()
        self.pin = self.device.type == "cuda"
        self.data = {
            "train": _SplitDataset(dataset.train.paths, dataset.train.images, label_map[dataset.train.labels], train_tf),
            "eval_train": _SplitDataset(dataset.train.paths, dataset.train.images, label_map[dataset.train.labels], test_tf),
            "test": _SplitDataset(dataset.test.paths, dataset.test.images, label_map[dataset.test.labels], test_tf),
        }
        self._train_sampler = _EpochBatches()
        self._train_loader: DataLoader | None = None

    def len_batches(self, n: int, batch_size: int) -> int:
        return len_batches(n, batch_size)

    def _loader(self, data: Dataset, sampler: Sampler, persistent: bool, seed: int) -> DataLoader:
        return DataLoader(
            data,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.pin,
            persistent_workers=persistent and self.workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.to(self.device, non_blocking=self.pin), y.to(self.device, non_blocking=self.pin)

    def train_batches(
        self, indices: np.ndarray, batch_size: int, generator: torch.Generator, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (unless ``shuffle=False``), augmented batches; the workers' transform RNG
        is seeded from ``generator``."""
        n = len(indices)
        if n == 0:
            return
        seed = _epoch_seed(generator)
        order = np.asarray(indices, dtype=np.int64)
        if shuffle:
            order = order[torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()]
        self._train_sampler.batches = [order[s:e].tolist() for s, e in batch_bounds(n, batch_size)]
        if self._train_loader is None:
            # Persistent: created once, workers reused every epoch; their torch RNG is seeded
            # from the first epoch's draw, so a run is reproducible from its start. With no
            # workers the transforms draw from the global torch RNG that the run seeds.
            self._train_loader = self._loader(self.data["train"], self._train_sampler, True, seed)
        for x, y in self._train_loader:
            yield self._to_device(x, y)

    def eval_batches(
        self, indices: np.ndarray, split: str, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented batches of ``indices`` in order (test transform)."""
        _check_split(split)
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 0:
            return
        sampler = _EpochBatches()
        sampler.batches = [idx[s:e].tolist() for s, e in batch_bounds(len(idx), batch_size, merge_singleton=False)]
        data = self.data["eval_train" if split == "train" else "test"]
        for x, y in self._loader(data, sampler, False, 0):
            yield self._to_device(x, y)


def make_pipeline(dataset: LoadedDataset, label_map: np.ndarray, config: RunConfig, device: torch.device) -> BatchPipeline:
    """The pipeline ``config.pipeline`` asks for (``auto``: tensor when the data is in memory)."""
    choice = config.pipeline
    resident = dataset.train.tensor_resident and dataset.test.tensor_resident
    if choice == "auto":
        choice = "tensor" if resident else "loader"
    if choice == "tensor":
        if not resident:
            raise ConfigError(
                f"pipeline 'tensor' needs images in memory, but {dataset.name} is read from files; use --set pipeline=loader"
            )
        return TensorPipeline(dataset, label_map, config, device)
    if choice == "loader":
        return LoaderPipeline(dataset, label_map, config, device)
    raise ConfigError(f"pipeline must be auto, tensor or loader, got {config.pipeline!r}")
