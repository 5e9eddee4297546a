"""iCaRL (Rebuffi et al., CVPR 2017) as the LT-CIL benchmark's code (FACIL's ``icarl``) trains it,
and the nearest-mean-of-exemplars (NME) classifier.

Training, by default the reference code's criterion: softmax cross-entropy over every seen
class plus ``lamb`` x the sum over old classes of the binary cross-entropy between the student's
and the frozen previous model's sigmoid outputs; ``icarl.loss=paper`` gives Alg. 3's form
(sigmoid BCE over every seen class, one-hot targets on the new classes, the teacher's sigmoid
on the old ones). Schedule, by default FACIL's patience rule, which the reference keeps for
iCaRL where the other approaches step at fixed epochs: the lr is divided by 10 (the run's
``lr_gamma``) after ``lr_patience`` epochs without a better loss on the new classes' hold-out
(``Scenario.val_indices`` of the task, FACIL's validation split) and training stops once it
would fall below ``lr_min``; ``icarl.schedule=step`` gives the run's fixed steps.
Prediction (Alg. 1): the class whose exemplars' mean feature is nearest to the image's
feature, all vectors L2-normalised; the means are computed after each task's memory update
with the current model, on the test transform (FACIL's ``compute_mean_of_exemplars``);
``icarl.flip_means=true`` also averages each exemplar's mirror image (as the original Theano code
does).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from .. import losses
from ..registry import register_method
from ._building_blocks import KnowledgeDistillationMixin
from .base import Method
from ..approach_options import ICaRLOptions as Options

log = logging.getLogger(__name__)


@register_method("icarl")
class ICaRL(KnowledgeDistillationMixin, Method):
    name = "icarl"
    Options = Options
    summary = "iCaRL (Rebuffi et al. 2017): CE + sigmoid-BCE distillation (LT-CIL code), nearest-mean-of-exemplars"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self.class_means: torch.Tensor | None = None  # (n_seen, D), L2-normalised

    def configure_main_phase(self, ctx, phase):
        if self.opts.schedule != "patience":
            return phase
        val = np.asarray(self.scenario.val_indices[ctx.task], dtype=np.int64)
        if len(val) == 0:
            # No hold-out (val_fraction=0, or classes too small for round(0.1 n) >= 1): the
            # loss could never improve, so keep the run's fixed steps for this task.
            log.warning("icarl: task %d has no validation images; fixed lr steps instead of the patience rule", ctx.task)
            return phase
        return dataclasses.replace(
            phase, schedule="patience", val_indices=val, patience=self.opts.lr_patience, lr_min=self.opts.lr_min
        )

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        logits = step.out["logits"][:, : step.ctx.n_seen].float()
        pair = self.distillation_pair(step)
        teacher = None if pair is None else pair[1]
        if self.opts.loss == "paper":
            return {"bce": losses.icarl_bce(logits, step.y, teacher)}
        return {"ce_bce": losses.icarl_reference_loss(logits, step.y, teacher, self.opts.lamb)}

    def after_train(self, ctx) -> None:
        self.class_means = self.exemplar_means(ctx.n_seen)

    def exemplar_means(self, n_seen: int) -> torch.Tensor:
        """Normalised mean of the normalised exemplar features per seen class (Alg. 1)."""
        indices = self.memory.indices()
        feats, labels = self.features(indices)
        if self.opts.flip_means:
            flipped, _ = self.features(indices, flip=True)
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
        self.class_means = None if means is None else means.to(self.device)
