"""Cosine classifiers: LUCIR's cosine-normalised head and PODNet's local-similarity head.

Both keep the engine's head interface (``grow(n_new)``, ``resize_to(num_classes)``,
``num_classes``, ``forward(features) -> logits``) so the Learner grows and restores them
like the linear head. Two things differ from :class:`~cil_core.engine.network.LinearHead`:

- the rows are two parameters, ``weight_old`` (classes of earlier tasks) and ``weight_new``
  (the current task's), because LUCIR and PODNet freeze the old classes' weights while the
  new ones learn ("Fix previous heads when Less-Forgetting constraint is activated", the
  LUCIR code; PODNet's ``groupwise_factors: old_weights: 0``). A frozen slice of one tensor
  would still be decayed by SGD's weight decay and momentum; a separate parameter is not.
- the logits are ``sigma * cos(f, w_c)`` with one learnable scale ``sigma`` (LUCIR's eta,
  Eq. 4), computed in float32 even under autocast: cosines near 1 lose the margins the
  losses on top of them use (LUCIR's 0.5, PODNet's 0.6) in bfloat16.

``similarity(features)`` gives the unscaled per-class similarities the methods' losses need
(LUCIR's margin ranking on cosines).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class CosineHead(nn.Module):
    """``sigma * <f/|f|, w_c/|w_c|>`` over all seen classes, ``proxies`` weight rows per class.

    With ``proxies == 1`` this is LUCIR's CosineLinear. Rows are stored class-major: class c
    owns rows ``[c * proxies, (c + 1) * proxies)``.
    """

    def __init__(self, in_features: int, proxies: int = 1) -> None:
        super().__init__()
        if proxies < 1:
            raise ValueError(f"proxies must be at least 1, got {proxies}")
        self.in_features = in_features
        self.proxies = proxies
        self.weight_old = nn.Parameter(torch.empty(0, in_features))
        self.weight_new = nn.Parameter(torch.empty(0, in_features))
        # LUCIR's CosineLinear: "self.sigma.data.fill_(1)  # for initialization of sigma".
        self.sigma = nn.Parameter(torch.ones(()))

    @property
    def num_classes(self) -> int:
        return (self.weight_old.shape[0] + self.weight_new.shape[0]) // self.proxies

    @property
    def num_old_classes(self) -> int:
        return self.weight_old.shape[0] // self.proxies

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.weight_old, self.weight_new])

    def grow(self, n_new: int) -> None:
        """The current rows become old rows; ``n_new`` classes get fresh rows.

        Fresh rows are uniform in ``+-1/sqrt(in_features)`` (LUCIR's ``reset_parameters``).
        ``requires_grad`` flags are kept as they were (the method decides what trains).
        """
        device = self.weight_new.device
        bound = 1.0 / math.sqrt(self.in_features)
        fresh = torch.empty(n_new * self.proxies, self.in_features, device=device).uniform_(-bound, bound)
        old_grad = self.weight_old.requires_grad
        self.weight_old = nn.Parameter(torch.cat([self.weight_old.data, self.weight_new.data]), requires_grad=old_grad)
        self.weight_new = nn.Parameter(fresh)

    def resize_to(self, num_classes: int) -> None:
        """Make room for a checkpoint's rows; the old/new split is taken from the checkpoint
        itself when it loads (see ``_load_from_state_dict``)."""
        if num_classes > self.num_classes:
            self.grow(num_classes - self.num_classes)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("weight_old", "weight_new"):
            key = prefix + name
            current = getattr(self, name)
            if key in state_dict and tuple(state_dict[key].shape) != tuple(current.shape):
                setattr(
                    self,
                    name,
                    nn.Parameter(
                        torch.empty(state_dict[key].shape, device=current.device, dtype=current.dtype),
                        requires_grad=current.requires_grad,
                    ),
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def raw_similarity(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine between each feature and each weight row: (batch, classes * proxies), float32."""
        with torch.autocast(device_type=features.device.type, enabled=False):
            f = F.normalize(features.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return f @ w.t()

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """Per-class similarity (batch, classes), unscaled."""
        return self.raw_similarity(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma.float() * self.similarity(features)


class LocalSimilarityHead(CosineHead):
    """PODNet's local similarity classifier (LSC): ``proxies`` cosine proxies per class, each
    class's similarity the softmax-attention weighted sum of its proxies' cosines (``merging:
    softmax``, ``gamma = 1`` in the reference ``CosineClassifier``), scaled by the learnt
    ``sigma`` like LUCIR's head (the LT-CIL benchmark's PODNet head)."""

    def __init__(self, in_features: int, proxies: int = 10, gamma: float = 1.0) -> None:
        super().__init__(in_features, proxies=proxies)
        self.gamma = gamma

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        return merge_proxies(self.raw_similarity(features), self.proxies, self.gamma)


def merge_proxies(raw: torch.Tensor, proxies: int, gamma: float = 1.0) -> torch.Tensor:
    """``sum_k softmax_k(gamma * s_ck) * s_ck`` per class from (batch, classes * proxies)."""
    if proxies == 1:
        return raw
    per_class = raw.view(raw.shape[0], -1, proxies)
    return (torch.softmax(gamma * per_class, dim=-1) * per_class).sum(-1)
