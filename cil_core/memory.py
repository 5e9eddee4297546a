"""Exemplar memory: a fixed number of exemplars per class chosen by herding, kept as indices.

Herding (Welling 2009, as used by iCaRL) picks, one at a time, the image whose addition
keeps the running mean of the selected L2-normalised features closest to the class mean.
All classes of a chunk are processed together on padded tensors, so the Python loop runs
over the ``m`` selection steps, never over classes or images.
"""

from __future__ import annotations

import numpy as np
import torch


def herding_select(features: torch.Tensor, labels: torch.Tensor, per_class: int, chunk_elems: int = 64_000_000) -> dict[int, np.ndarray]:
    """Return, per class label present in ``labels``, the row positions of its exemplars.

    ``features`` (N, D) on any device; rows are L2-normalised here. A class with at most
    ``per_class`` images keeps all of them (in their original order).
    """
    if per_class <= 0 or len(labels) == 0:
        return {}
    features = torch.nn.functional.normalize(features.float(), dim=1)
    labels = labels.long()
    classes = torch.unique(labels)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=int(classes.max()) + 1)[classes]
    starts = torch.cumsum(counts, 0) - counts
    n_max = int(counts.max())
    dim = features.shape[1]
    chunk = max(1, chunk_elems // max(1, n_max * dim))
    selected: dict[int, np.ndarray] = {}
    for lo in range(0, len(classes), chunk):
        cls = classes[lo : lo + chunk]
        cnt = counts[lo : lo + chunk]
        st = starts[lo : lo + chunk]
        c = len(cls)
        slot = torch.arange(n_max, device=features.device)
        valid = slot[None, :] < cnt[:, None]  # (c, n_max)
        rows = order[(st[:, None] + slot[None, :]).clamp(max=len(order) - 1)]  # (c, n_max)
        feats = features[rows] * valid[..., None]
        mu = feats.sum(1) / cnt[:, None]
        running = torch.zeros(c, dim, device=features.device)
        taken = ~valid
        picks = []
        steps = min(per_class, n_max)
        for k in range(1, steps + 1):
            candidate = (running[:, None, :] + feats) / k
            dist = (mu[:, None, :] - candidate).norm(dim=2)
            dist = dist.masked_fill(taken, float("inf"))
            best = dist.argmin(dim=1)
            picks.append(best)
            running = running + feats[torch.arange(c), best]
            taken[torch.arange(c), best] = True
        picks_t = torch.stack(picks, 1).cpu().numpy()
        rows_np = rows.cpu().numpy()
        for i, label in enumerate(cls.tolist()):
            n = int(cnt[i])
            if n <= per_class:
                pos = np.arange(n)
            else:
                pos = picks_t[i, :per_class]
            selected[label] = rows_np[i, pos]
    return selected


class ExemplarMemory:
    """Per-class exemplar indices into the training split (arrival-position class keys)."""

    def __init__(self, per_class: int) -> None:
        self.per_class = per_class
        self.by_class: dict[int, np.ndarray] = {}

    def indices(self) -> np.ndarray:
        if not self.by_class:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([self.by_class[c] for c in sorted(self.by_class)]).astype(np.int64)

    def counts(self, num_classes: int) -> np.ndarray:
        out = np.zeros(num_classes, dtype=np.int64)
        for c, idx in self.by_class.items():
            if c < num_classes:
                out[c] = len(idx)
        return out

    def add(self, selected: dict[int, np.ndarray]) -> None:
        for c, idx in selected.items():
            self.by_class[int(c)] = np.asarray(idx, dtype=np.int64)

    def state_dict(self) -> dict:
        return {"per_class": self.per_class, "by_class": {int(k): v.tolist() for k, v in self.by_class.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.per_class = state["per_class"]
        self.by_class = {int(k): np.asarray(v, dtype=np.int64) for k, v in state["by_class"].items()}
