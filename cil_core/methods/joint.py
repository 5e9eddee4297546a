"""Joint training: the upper bound. Each task trains on every training image of every class
seen so far (no exemplar memory, no distillation) with plain cross-entropy.

As in the LT-CIL benchmark's code (FACIL's ``joint``), the same network keeps training from
task to task on the growing union; ``joint.reinit=true`` re-initialises it before each task
instead (a model trained from scratch on tasks 0..t).

Learning rate: the reference's ``adjust_learning_rate`` sets only the backbone's group (group
0; the heads keep the initial lr): epoch 0 at lr, epochs 1-3 at 2/5, 3/5, 4/5 of it (a warm-up
that starts after the first epoch), then lr until epoch 160 and lr/10, lr/100 after 160 and
180 -- so at the script's 160 epochs it never decays (``joint.lr_rule=reference``, the
default, those epoch numbers scaled to this run's length). ``joint.lr_rule=step`` gives both
groups the run's step schedule like every other approach.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import get_backbone, register_method
from .base import Method
from ..approach_options import JointOptions as Options


REFERENCE_EPOCHS = 160  # the LT-CIL CIFAR script's --nepochs


def reference_backbone_lr_factor(epochs: int) -> Callable[[int], float]:
    """The backbone's lr multiplier in epoch ``k`` (0-based) under FACIL-joint's rule, the
    reference's epoch numbers (warm-up to 5, decays after 160 and 180 of 160) scaled by
    ``epochs / 160``. The rule runs after epoch ``k - 1`` as ``adjust_learning_rate(k)``,
    which evaluates it at ``k + 1``; epoch 0 keeps the optimiser's initial lr."""
    scale = epochs / REFERENCE_EPOCHS

    def factor(k: int) -> float:
        if k == 0:
            return 1.0
        e = (k + 1) / scale
        if e <= 5:
            return (k + 1) / (5 * scale)
        if e > 180:
            return 0.01
        if e > 160:
            return 0.1
        return 1.0

    return factor


@register_method("joint")
class Joint(Method):
    name = "joint"
    Options = Options
    uses_memory = False
    summary = "joint training on all data seen so far (upper bound)"

    def train_indices(self, ctx) -> np.ndarray:
        return np.concatenate(self.scenario.train_indices[: ctx.task + 1]).astype(np.int64)

    def before_task(self, ctx) -> None:
        if self.opts.reinit and ctx.task > 0:
            self._reinitialise(ctx.n_seen)

    def optimizer_params(self, ctx) -> list[dict[str, Any]]:
        model = self.model
        return [
            {"params": [p for p in model.backbone.parameters() if p.requires_grad]},
            {"params": [p for p in model.head.parameters() if p.requires_grad]},
        ]

    def configure_main_phase(self, ctx, phase):
        if self.opts.lr_rule != "reference":
            return phase
        return dataclasses.replace(
            phase, schedule="lambda", lr_lambdas=[reference_backbone_lr_factor(phase.epochs), lambda k: 1.0]
        )

    def _reinitialise(self, n_seen: int) -> None:
        """Fresh backbone and head weights (the global RNG draws them, so a resumed run matches)."""
        images = self.dataset.train.images
        in_channels = int(images.shape[1]) if images is not None else 3
        fresh = get_backbone(self.config.backbone)(in_channels=in_channels, **self.backbone_kwargs())
        self.model.backbone.load_state_dict(fresh.state_dict())
        head = self.make_head(fresh.feature_dim)
        head.grow(n_seen)
        self.model.head.load_state_dict(head.state_dict())

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(step.out["logits"][:, : step.ctx.n_seen].float(), step.y)}
