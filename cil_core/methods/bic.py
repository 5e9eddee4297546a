"""BiC: Large Scale Incremental Learning / Bias Correction (Wu et al., CVPR 2019).

Stage 1 (main phase): ``(1 - lambda) * CE + lambda * KD`` with ``lambda = n_old / n_seen``, the
distillation (T = 2) between the old classes' outputs of the model and of the frozen previous
model, both passed through the bias layers learnt so far (as the reference implementations
do; the current task's layer is the identity while it trains).

Stage 2 (t > 0): a bias layer ``q = alpha * o + beta`` on the new classes' logits (two scalars
per task; earlier tasks' layers stay fixed) is fit on a small *balanced* validation set with
the network frozen: cross-entropy over all seen classes, plus the reference code's
``0.1 * beta^2 / 2``. The validation set holds ``ceil(val_fraction x memory_per_class)`` images
(2 of 20) of every seen class, and the exemplar memory keeps the rest (18): the paper's 9:1
split of the exemplars. As in the reference code (``val_source=train``), a new class's first
images in the task's training data (dataset order) are cut out of it when the class arrives
and never trained on; a class with too few images keeps at least one for training (the
reference stops with an assertion there). ``val_source=holdout`` takes them from the 10%
per-class hold-out of the task (``Scenario.val_indices``) instead, keeping all training data.

Prediction uses the bias-corrected logits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_method
from ._building_blocks import KnowledgeDistillationMixin, frozen_forward
from .base import Method
from ..approach_options import BiCOptions as Options


def select_per_class(indices: np.ndarray, labels: np.ndarray, per_class: int, keep: int = 0) -> np.ndarray:
    """The first ``per_class`` of ``indices`` (in their order) of each label, as one array,
    leaving at least ``keep`` of each label unselected."""
    if per_class <= 0 or len(indices) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")
    rank = np.arange(len(order)) - first
    size = np.bincount(sorted_labels)[sorted_labels]
    chosen = (rank < per_class) & (rank < size - keep)
    return np.sort(np.asarray(indices, dtype=np.int64)[order[chosen]])


def validation_per_class(val_fraction: float, memory_per_class: int) -> int:
    """FACIL's ``num_val_ex_cls = ceil(val_percentage x num_exemplars_per_class)``."""
    return int(math.ceil(val_fraction * memory_per_class))


def bias_correct(logits: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """BiC Eq. 4 per class: ``alpha_c * o_c + beta_c`` (alpha = 1, beta = 0 leaves a class as is)."""
    return logits * alpha + beta


@register_method("bic")
class BiC(KnowledgeDistillationMixin, Method):
    name = "bic"
    Options = Options
    summary = "BiC (Wu et al. 2019): KD + a two-parameter bias layer per task fit on a balanced split"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self.alphas: list[float] = []  # per task
        self.betas: list[float] = []
        self.val_indices = np.zeros(0, dtype=np.int64)  # the balanced bias-correction set
        self._alpha_vec: torch.Tensor | None = None  # per seen class, from the per-task values
        self._beta_vec: torch.Tensor | None = None

    # -- per-class view of the per-task layers --------------------------------------------
    def _task_of_classes(self, n: int) -> torch.Tensor:
        task_of = np.concatenate([np.full(len(c), u) for u, c in enumerate(self.scenario.task_classes)])
        return torch.as_tensor(task_of[:n], dtype=torch.long, device=self.device)

    def _class_vectors(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        task_of = self._task_of_classes(n)
        device = self.device
        alpha = torch.tensor(self.alphas, dtype=torch.float32, device=device)[task_of]
        beta = torch.tensor(self.betas, dtype=torch.float32, device=device)[task_of]
        return alpha, beta

    def _refresh(self, n_seen: int) -> None:
        """Cache the per-class vectors (outside inference mode: training multiplies by them)."""
        self._alpha_vec, self._beta_vec = self._class_vectors(n_seen)

    def corrected(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        if self._alpha_vec is None or self._beta_vec is None or len(self._alpha_vec) < n:
            alpha, beta = self._class_vectors(n)
        else:
            alpha, beta = self._alpha_vec, self._beta_vec
        return bias_correct(logits[:, :n].float(), alpha[:n], beta[:n])

    # -- hooks -------------------------------------------------------------------------------
    def _val_per_class(self) -> int:
        return validation_per_class(self.opts.val_fraction, self.config.memory_per_class)

    def exemplars_per_class(self) -> int:
        """The memory keeps what the validation split leaves of each class's budget (18 of 20)."""
        return max(0, super().exemplars_per_class() - self._val_per_class())

    def train_indices(self, ctx) -> np.ndarray:
        """Choose the new classes' validation images; with ``val_source=train`` they leave the
        task's new data (``ctx.new_indices``, so herding never picks them either)."""
        if self.opts.val_source == "train":
            source = np.asarray(ctx.new_indices, dtype=np.int64)
            chosen = select_per_class(source, self.train_labels[source], self._val_per_class(), keep=1)
            ctx.new_indices = source[~np.isin(source, chosen)]
        else:
            held_out = np.asarray(self.scenario.val_indices[ctx.task], dtype=np.int64)
            chosen = select_per_class(held_out, self.train_labels[held_out], self._val_per_class())
        self.val_indices = np.union1d(self.val_indices, chosen).astype(np.int64)
        return super().train_indices(ctx)

    def before_task(self, ctx) -> None:
        while len(self.alphas) <= ctx.task:  # the new task's layer starts as the identity
            self.alphas.append(1.0)
            self.betas.append(0.0)
        self._refresh(ctx.n_seen)

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        student = self.corrected(step.out["logits"], ctx.n_seen)
        ce = F.cross_entropy(student, step.y)
        teacher = None
        if step.teacher_out is not None and ctx.n_old > 0:
            teacher = self.corrected(step.teacher_out["logits"], ctx.n_old)
        kd = self.kd_term(step, self.opts.temperature, student_logits=student, teacher_logits=teacher)
        if kd is None:
            return {"ce": ce}
        if self.opts.lamb is None:
            lamb = ctx.n_old / ctx.n_seen
            return {"ce": (1.0 - lamb) * ce, "kd": lamb * kd}
        return {"ce": ce, "kd": self.opts.lamb * kd}

    def after_train(self, ctx) -> None:
        super().after_train(ctx)
        if ctx.task == 0:
            return
        device = self.device
        alpha = nn.Parameter(torch.ones((), device=device))
        beta = nn.Parameter(torch.zeros((), device=device))
        n_old, n_seen = ctx.n_old, ctx.n_seen

        def layer(out: dict[str, Any]) -> torch.Tensor:
            old = self.corrected(out["logits"], n_old)
            new = bias_correct(out["logits"][:, n_old:n_seen].float(), alpha, beta)
            return torch.cat([old, new], dim=1)

        def terms(step) -> dict[str, torch.Tensor]:
            return {
                "ce": F.cross_entropy(step.out["logits"], step.y),
                "beta_l2": self.opts.beta_l2 * beta.pow(2) / 2,
            }

        self.run_stage(
            "bias_correction",
            indices=self.val_indices,
            epochs=self.opts.bias_epochs,
            param_groups=[{"params": [alpha, beta]}],
            loss_terms=terms,
            lr=self.opts.bias_lr,  # None: the run's lr
            weight_decay=0.0,
            momentum=0.9,
            forward=frozen_forward(self.model, layer),
            train_mode=False,
            use_teacher=False,
        )
        self.alphas[ctx.task] = float(alpha.detach())
        self.betas[ctx.task] = float(beta.detach())
        self._refresh(n_seen)

    def eval_logits(self, out: dict[str, torch.Tensor], num_seen: int) -> torch.Tensor:
        return self.corrected(out["logits"], num_seen)

    def trained_holdout_indices(self) -> np.ndarray:
        """With ``val_source=holdout`` the bias-correction set comes from the hold-out, so the
        validation figures skip it; the reference's set (``train``) is cut from training data."""
        return self.val_indices if self.opts.val_source == "holdout" else np.zeros(0, dtype=np.int64)

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"alphas": list(self.alphas), "betas": list(self.betas), "val_indices": self.val_indices.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alphas = [float(a) for a in state["alphas"]]
        self.betas = [float(b) for b in state["betas"]]
        self.val_indices = np.asarray(state["val_indices"], dtype=np.int64)
        self._alpha_vec = self._beta_vec = None
