"""Fine-tuning with exemplars: plain cross-entropy on the new data plus the memory.

The lower bound every table starts from: no distillation, no rebalancing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_method
from .base import Method


@register_method("finetune")
class Finetune(Method):
    name = "finetune"
    summary = "cross-entropy on new data plus exemplars (lower bound)"

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(step.out["logits"][:, : step.ctx.n_seen].float(), step.y)}
