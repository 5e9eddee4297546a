"""The incremental network: a feature extractor and ONE growing classifier over all classes.

The classifier is a single weight tensor (not a list of per-task heads) so per-class
operations (DGR's per-row gradient norms, weight scaling, NME) are batched tensor ops.
Heads share the interface ``grow(n_new)`` / ``forward(features)``; cosine heads for
LUCIR and PODNet live beside the linear one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LinearHead(nn.Module):
    """A linear classifier whose rows are appended as classes arrive (old rows kept as they are)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0))

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def grow(self, n_new: int) -> None:
        """Append ``n_new`` rows initialised like ``nn.Linear`` (kaiming-uniform, fan-in bound)."""
        device = self.weight.device
        new_w = torch.empty(n_new, self.in_features, device=device)
        nn.init.kaiming_uniform_(new_w, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.in_features)
        new_b = torch.empty(n_new, device=device).uniform_(-bound, bound)
        self.weight = nn.Parameter(torch.cat([self.weight.data, new_w]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, new_b]))

    def resize_to(self, num_classes: int) -> None:
        """Make room for a checkpoint's rows before ``load_state_dict`` (values overwritten)."""
        if num_classes > self.num_classes:
            self.grow(num_classes - self.num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # float32 even under bf16 autocast: the logits feed logit adjustment, distillation
        # and DGR's per-class gradient norms, and their gradients w.r.t. the logits would
        # otherwise be rounded to bf16 (8 mantissa bits) before any of them is computed.
        with torch.autocast(device_type=features.device.type, enabled=False):
            return nn.functional.linear(features.float(), self.weight, self.bias)


class IncrementalNet(nn.Module):
    """``forward`` returns ``{"features", "logits", "maps"}``; methods pick what they need."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.backbone(x)
        out["logits"] = self.head(out["features"])
        return out
