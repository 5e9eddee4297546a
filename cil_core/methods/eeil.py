"""EEIL: End-to-End Incremental Learning (Castro et al., ECCV 2018), as the LT-CIL benchmark's code
(FACIL's ``eeil``) trains it.

Main phase (t > 0): cross-entropy over all seen classes plus one distillation term per old
task's classification layer, each layer's logits softened with T = 2 on their own. The
reference distils layers ``0..t-2`` here and the last old layer only in the balanced stage
(``if self._finetuning_balanced: t else t - 1``), so task 1's main phase has no distillation;
``eeil.main_kd_last_old_head=true`` distils every old layer (the paper's Eq. 1). Its form is
FACIL's element-wise mean binary cross-entropy between the softened student and teacher
outputs (``eeil.distillation=bce``); ``soft_ce`` gives the paper's soft cross-entropy.

Balanced fine-tuning (t > 0, before the exemplars are chosen, as in the reference): every old
exemplar plus a random subset of the new task's training images of the same total size,
``lr x 0.01`` constant for 40 epochs beside the 160 of the main phase (the reference script's
steps at 80/120 fall outside it), distilling every old layer. ``finetune_new_kd=true`` adds the
paper's temporary distillation of the new layer towards the model before fine-tuning.

Not reproduced: the paper's extra data augmentation and its gradient noise; FACIL leaves both
out too (``--noise-grad`` defaults off).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ..registry import register_method
from ._building_blocks import KnowledgeDistillationMixin, frozen_copy, scaled_epochs
from .base import Method
from ..approach_options import EEILOptions as Options

# The reference's lengths: ``--nepochs 160`` (script) and ``--nepochs-finetuning 40``.
REFERENCE_MAIN_EPOCHS = 160
REFERENCE_FINETUNE_EPOCHS = 40


@register_method("eeil")
class EEIL(KnowledgeDistillationMixin, Method):
    name = "eeil"
    Options = Options
    summary = "EEIL (Castro et al. 2018): per-task KD + balanced fine-tuning (LT-CIL code)"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self._snapshot: torch.nn.Module | None = None  # the model before balanced fine-tuning

    def old_task_bounds(self, task: int) -> list[tuple[int, int]]:
        """Class ranges ``[start, end)`` of tasks ``0..task-1`` (arrival positions)."""
        bounds, start = [], 0
        for classes in self.scenario.task_classes[:task]:
            bounds.append((start, start + len(classes)))
            start += len(classes)
        return bounds

    def distillation(self, student: torch.Tensor, teacher: torch.Tensor, bounds: list[tuple[int, int]]) -> torch.Tensor:
        """The sum over old layers ``bounds`` of the per-layer distillation (``opts.distillation``)."""
        T = self.opts.temperature
        if self.opts.distillation == "soft_ce":
            return losses.blockwise_kd_loss(student, teacher, bounds, T)
        total = student.new_zeros(())
        for start, end in bounds:
            total = total + losses.softmax_bce_distillation(student[:, start:end], teacher[:, start:end], T)
        return total

    def _terms(self, step, distilled_heads: int) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        logits = step.out["logits"][:, : ctx.n_seen].float()
        terms = {"ce": F.cross_entropy(logits, step.y)}
        pair = self.distillation_pair(step)
        bounds = self.old_task_bounds(ctx.task)[:distilled_heads]
        if pair is not None and bounds:
            terms["kd"] = self.opts.lamb * self.distillation(pair[0], pair[1], bounds)
        return terms

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        """Main phase: layers ``0..t-2`` (or every old one with ``main_kd_last_old_head``)."""
        task = step.ctx.task
        return self._terms(step, task if self.opts.main_kd_last_old_head else task - 1)

    def finetune_terms(self, step) -> dict[str, torch.Tensor]:
        """Balanced fine-tuning: every old layer, plus the optional new-layer term."""
        terms = self._terms(step, step.ctx.task)
        if self.opts.finetune_new_kd and self._snapshot is not None:
            ctx = step.ctx
            with torch.no_grad():
                before = self._snapshot(step.x)["logits"][:, ctx.n_old : ctx.n_seen].float()
            student = step.out["logits"][:, ctx.n_old : ctx.n_seen].float()
            terms["kd_new"] = self.opts.lamb * self.distillation(student, before, [(0, ctx.n_seen - ctx.n_old)])
        return terms

    def finetune_indices(self, ctx) -> np.ndarray:
        """Every old exemplar plus a random subset of the new task's images of the same size
        (FACIL's ``_get_train_loader(balanced=True)``: ``randperm(len(trn))[:len(exemplars)]``)."""
        memory = np.asarray(self.memory.indices(), dtype=np.int64)
        new = np.asarray(ctx.new_indices, dtype=np.int64)
        order = torch.randperm(len(new), generator=self.generator).numpy()
        return np.concatenate([memory, new[order[: len(memory)]]]).astype(np.int64)

    def after_main_phase(self, ctx) -> None:
        super().after_main_phase(ctx)
        if ctx.task == 0 or len(self.memory.indices()) == 0:
            return
        epochs = self.opts.finetune_epochs
        if epochs is None:
            epochs = scaled_epochs(REFERENCE_FINETUNE_EPOCHS, REFERENCE_MAIN_EPOCHS, self.config.epochs)
        self._snapshot = frozen_copy(self.model) if self.opts.finetune_new_kd else None
        try:
            self.run_stage(
                "balanced_finetune",
                indices=self.finetune_indices(ctx),
                epochs=epochs,
                param_groups=self.optimizer_params(ctx),
                loss_terms=self.finetune_terms,
                lr=self.config.lr * self.opts.finetune_lr_factor,
            )
        finally:
            self._snapshot = None
