"""Joint training: the upper bound. Each task trains on every training image of every class
seen so far (no exemplar memory, no distillation) with plain cross-entropy.

"Retrained each task": by default the network is re-initialised before each task, so the
row of task t is a model trained from scratch on the union of tasks 0..t; ``joint.reinit=false``
continues from the previous task's weights instead (FACIL's ``joint``).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ..registry import get_backbone, register_method
from .base import Method
from ..approach_options import JointOptions as Options


@register_method("joint")
class Joint(Method):
    name = "joint"
    Options = Options
    uses_memory = False
    summary = "joint training on all data seen so far (upper bound)"

    def train_indices(self, ctx) -> np.ndarray:
        return np.concatenate(self.learner.scenario.train_indices[: ctx.task + 1]).astype(np.int64)

    def before_task(self, ctx) -> None:
        if self.opts.reinit and ctx.task > 0:
            self._reinitialise(ctx.n_seen)

    def _reinitialise(self, n_seen: int) -> None:
        """Fresh backbone and head weights (the global RNG draws them, so a resumed run matches)."""
        learner = self.learner
        images = learner.dataset.train.images
        in_channels = int(images.shape[1]) if images is not None else 3
        fresh = get_backbone(learner.config.backbone)(in_channels=in_channels, **self.backbone_kwargs())
        learner.model.backbone.load_state_dict(fresh.state_dict())
        head = self.make_head(fresh.feature_dim)
        head.grow(n_seen)
        learner.model.head.load_state_dict(head.state_dict())

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(step.out["logits"][:, : step.ctx.n_seen].float(), step.y)}
