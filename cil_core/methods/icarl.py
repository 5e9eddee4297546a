"""iCaRL (Rebuffi et al., CVPR 2017): sigmoid binary cross-entropy with distillation, and the
nearest-mean-of-exemplars (NME) classifier.

Training (Alg. 3): every output is a sigmoid; new classes get one-hot targets, old classes the
frozen previous model's sigmoid outputs (so the classification and distillation terms are one
BCE). Prediction (Alg. 1): the class whose exemplars' mean feature is nearest to the image's
feature, all vectors L2-normalised. The means are recomputed from the exemplar memory after
each task's memory update, with the current model, averaging each exemplar's feature with
that of its mirror image (as the reference implementations do).
"""

from __future__ import annotations

from typing import Any

import torch

from .. import losses
from ..registry import register_method
from ._shared import KnowledgeDistillationMixin
from .base import Method
from ..approach_options import ICaRLOptions as Options


@register_method("icarl")
class ICaRL(KnowledgeDistillationMixin, Method):
    name = "icarl"
    Options = Options
    summary = "iCaRL (Rebuffi et al. 2017): sigmoid BCE with distillation, nearest-mean-of-exemplars"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self.class_means: torch.Tensor | None = None  # (n_seen, D), L2-normalised

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        logits = step.out["logits"][:, : step.ctx.n_seen].float()
        pair = self.distillation_pair(step)
        return {"bce": losses.icarl_bce(logits, step.y, None if pair is None else pair[1])}

    def after_train(self, ctx) -> None:
        self.class_means = self.exemplar_means(ctx.n_seen)

    def exemplar_means(self, n_seen: int) -> torch.Tensor:
        """Normalised mean of the normalised exemplar features per seen class (Alg. 1)."""
        indices = self.learner.memory.indices()
        feats, labels = self.learner.features(indices)
        if self.opts.flip_means:
            flipped, _ = self.learner.features(indices, flip=True)
            feats, labels = torch.cat([feats, flipped]), torch.cat([labels, labels])
        means, counts = losses.normalised_class_means(feats, labels.long(), n_seen)
        # A class without exemplars (memory_per_class = 0) can never be the nearest mean.
        return torch.where(counts[:, None] > 0, means, torch.full_like(means, float("nan")))

    def eval_logits(self, out: dict[str, torch.Tensor], num_seen: int) -> torch.Tensor:
        if self.opts.classifier == "cnn" or self.class_means is None:
            return super().eval_logits(out, num_seen)
        logits = losses.nearest_mean_logits(out["features"], self.class_means[:num_seen])
        return logits.masked_fill(torch.isnan(logits), float("-inf"))

    def state_dict(self) -> dict[str, Any]:
        return {"class_means": None if self.class_means is None else self.class_means.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        means = state.get("class_means")
        self.class_means = None if means is None else means.to(self.learner.device)
