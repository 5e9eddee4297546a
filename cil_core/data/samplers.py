"""LT-CIL's class-aware sampler (``ClassAwareSampler`` in ``datasets/data_loader.py`` of
xialeiliu/Long-Tailed-CIL, from Kang et al.'s decoupling code), which feeds the 2-stage
recipe's second stage.

An epoch has as many draws as the data. The classes are visited in a shuffled cycle (a full
pass over every class, reshuffled after each pass); each visit takes the next
``per_visit`` images (4) of that class from the class's own shuffled cycle of its images.
Both cycles carry over from one epoch to the next (the reference builds the sampler once per
task). Shuffles draw from the run's generator, so a run stays reproducible.
"""

from __future__ import annotations

import numpy as np
import torch


class _Cycle:
    """``RandomCycleIter``: the items in a shuffled order, reshuffled after each full pass."""

    def __init__(self, items: np.ndarray, generator: torch.Generator) -> None:
        self.items = np.asarray(items)
        self.generator = generator
        self.order = self.items
        self.position = len(self.items)  # the first draw shuffles

    def next(self) -> int:
        if self.position == len(self.items):
            perm = torch.randperm(len(self.items), generator=self.generator).numpy()
            self.order = self.items[perm]
            self.position = 0
        item = self.order[self.position]
        self.position += 1
        return int(item)


class ClassAwareSampler:
    """``epoch()`` returns one epoch's indices (as many as ``indices``), class after class."""

    def __init__(self, indices: np.ndarray, labels: np.ndarray, generator: torch.Generator, per_visit: int = 4) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        labels = np.asarray(labels)
        classes = np.unique(labels)
        self.size = len(indices)
        self.per_visit = per_visit
        self.classes = _Cycle(classes, generator)
        self.images = {int(c): _Cycle(indices[labels == c], generator) for c in classes}

    def epoch(self) -> np.ndarray:
        out: list[int] = []
        while len(out) < self.size:
            images = self.images[self.classes.next()]
            visit = [images.next() for _ in range(self.per_visit)]
            out.extend(visit[: self.size - len(out)])
        return np.asarray(out, dtype=np.int64)
