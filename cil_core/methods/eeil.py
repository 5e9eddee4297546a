"""EEIL: End-to-End Incremental Learning (Castro et al., ECCV 2018).

Main phase: cross-entropy over all seen classes plus one distillation term per old task's
classification layer (Eq. 1, ``L = L_C + sum_f L_D_f``: each old task's logits form their own
softmax, softened with T = 2). Then, for t > 0, the paper's *balanced fine-tuning*: a short
phase with a 10x smaller learning rate on a class-balanced subset (the exemplar memory after
its update: the same number of images for old and new classes), with the old-class
distillation kept and a temporary distillation term on the new classes' logits towards the
model as it was before fine-tuning.

The distillation is the paper's soft cross-entropy; FACIL's EEIL (which the LT-CIL benchmark
builds on) computes a binary cross-entropy between the two softened distributions instead.
Not reproduced: the paper's extra data augmentation (brightness/contrast jitter, random crops
on top of flips) and its gradient noise; FACIL and the LT-CIL benchmark leave both out too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .. import losses
from ..engine.learner import Phase
from ..registry import register_method
from ._shared import KnowledgeDistillationMixin, fraction_milestones, frozen_copy, scaled_epochs
from .base import Method
from ..approach_options import EEILOptions as Options


@register_method("eeil")
class EEIL(KnowledgeDistillationMixin, Method):
    name = "eeil"
    Options = Options
    summary = "EEIL (Castro et al. 2018): per-task KD + balanced fine-tuning"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self._snapshot: torch.nn.Module | None = None  # the model before balanced fine-tuning

    def old_task_bounds(self, task: int) -> list[tuple[int, int]]:
        """Class ranges ``[start, end)`` of tasks ``0..task-1`` (arrival positions)."""
        bounds, start = [], 0
        for classes in self.learner.scenario.task_classes[:task]:
            bounds.append((start, start + len(classes)))
            start += len(classes)
        return bounds

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        logits = step.out["logits"][:, : ctx.n_seen].float()
        terms = {"ce": F.cross_entropy(logits, step.y)}
        pair = self.distillation_pair(step)
        if pair is not None:
            bounds = self.old_task_bounds(ctx.task)
            terms["kd"] = self.opts.lamb * losses.blockwise_kd_loss(pair[0], pair[1], bounds, self.opts.temperature)
        return terms

    def finetune_terms(self, step) -> dict[str, torch.Tensor]:
        terms = self.loss_terms(step)
        if self.opts.finetune_new_kd and self._snapshot is not None:
            ctx = step.ctx
            with torch.no_grad():
                before = self._snapshot(step.x)["logits"][:, ctx.n_old : ctx.n_seen].float()
            student = step.out["logits"][:, ctx.n_old : ctx.n_seen].float()
            terms["kd_new"] = self.opts.lamb * losses.kd_loss(student, before, self.opts.temperature)
        return terms

    def after_train(self, ctx) -> None:
        super().after_train(ctx)
        memory = self.learner.memory.indices()
        if ctx.task == 0 or len(memory) == 0:
            return
        cfg = self.learner.config
        epochs = self.opts.finetune_epochs
        if epochs is None:
            epochs = scaled_epochs(30, 40, cfg.epochs)
        model = self.learner.model
        self._snapshot = frozen_copy(model) if self.opts.finetune_new_kd else None
        try:
            self.learner.run_phase(
                Phase(
                    name="balanced_finetune",
                    indices=memory,
                    epochs=epochs,
                    lr=cfg.lr * self.opts.finetune_lr_factor,
                    milestones=fraction_milestones(epochs, (1 / 3, 2 / 3)),
                    param_groups=self.optimizer_params(ctx),
                    loss_terms=self.finetune_terms,
                    weight_decay=cfg.weight_decay,
                    batch_size=cfg.batch_size,
                    momentum=cfg.momentum,
                    lr_gamma=cfg.lr_gamma,
                )
            )
        finally:
            self._snapshot = None
