"""Building blocks several approaches are made of (not an approach: the leading underscore keeps this
module out of the registry).

- :class:`KnowledgeDistillationMixin`: the teacher's old-class logits and the KD term on them,
  used by LwF, iCaRL, EEIL and BiC instead of each slicing ``step.teacher_out`` itself.
- :func:`frozen_forward`: the ``Phase.forward`` of the extra stages that train something on
  top of a frozen network (BiC's bias layer, the 2-stage weight scaling).
- :func:`frozen_copy`, :func:`scaled_epochs`, :func:`fraction_milestones`: small helpers for
  the stages that snapshot a model or rescale a paper's stage length to this run's schedule.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from .. import losses
from ..approach_options import APPROACH_OPTIONS
from ..registry import register_method

if TYPE_CHECKING:
    from ..engine.learner import Step


class KnowledgeDistillationMixin:
    """Old-class logits of the student and of the frozen previous model (the teacher).

    The engine hands ``step.teacher_out`` (the teacher's output dict) to every step of a task
    t > 0 when the method sets ``needs_teacher = True``; this mixin sets it.
    """

    needs_teacher = True

    def distillation_pair(
        self,
        step: "Step",
        student_logits: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(student[:, :n_old], teacher[:, :n_old])`` in float32, or None at the first task.

        ``student_logits``/``teacher_logits`` replace the raw logits where a method transforms
        them first (BiC's bias correction)."""
        n_old = step.ctx.n_old
        if n_old == 0 or step.teacher_out is None:
            return None
        student = step.out["logits"] if student_logits is None else student_logits
        teacher = step.teacher_out["logits"] if teacher_logits is None else teacher_logits
        return student[:, :n_old].float(), teacher[:, :n_old].float()

    def kd_term(
        self,
        step: "Step",
        temperature: float,
        student_logits: torch.Tensor | None = None,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Hinton KD on the old classes, None at the first task: FACIL's form with its eps
        smoothing (:func:`cil_core.losses.kd_loss`, ``eps=FACIL_KD_EPS``; LwF and BiC)."""
        pair = self.distillation_pair(step, student_logits, teacher_logits)
        if pair is None:
            return None
        return losses.kd_loss(pair[0], pair[1], temperature, eps=losses.FACIL_KD_EPS)


def frozen_forward(model: nn.Module, logits: Callable[[dict[str, Any]], torch.Tensor]) -> Callable[[torch.Tensor], dict[str, Any]]:
    """A ``Phase.forward`` that runs ``model`` without gradients, then ``logits(out)`` with them.

    Use it with ``train_mode=False`` (BatchNorm statistics frozen) and a param group holding
    only what ``logits`` learns (BiC's alpha/beta, the 2-stage scales).
    """

    def forward(x: torch.Tensor) -> dict[str, Any]:
        with torch.no_grad():
            out = dict(model(x))
        out["logits"] = logits(out)
        return out

    return forward


def frozen_backbone_forward(model: nn.Module) -> Callable[[torch.Tensor], dict[str, Any]]:
    """A ``Phase.forward`` that runs the backbone without gradients and the head with them
    (classifier-only fine-tuning on fixed features: LUCIR's class-balanced fine-tuning)."""

    def forward(x: torch.Tensor) -> dict[str, Any]:
        with torch.no_grad():
            out = dict(model.backbone(x))
        out["logits"] = model.head(out["features"])
        return out

    return forward


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen."""
    frozen = copy.deepcopy(model)
    frozen.eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def scaled_epochs(paper_epochs: int, paper_main_epochs: int, main_epochs: int) -> int:
    """A stage the paper ran ``paper_epochs`` beside a ``paper_main_epochs`` main phase, scaled to
    this run's ``main_epochs`` (at least one epoch)."""
    return max(1, int(round(paper_epochs * main_epochs / paper_main_epochs)))


def fraction_milestones(epochs: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Milestones at ``fractions`` of ``epochs`` (duplicates and out-of-range ones dropped)."""
    return tuple(sorted({m for m in (int(round(f * epochs)) for f in fractions) if 0 < m < epochs}))


def register_variant(
    base: type, mixin: type, extra_options: type, *, suffix: str, class_suffix: str, module: str, summary: str, **attrs: Any
) -> type:
    """Register ``<base>_<suffix>``: ``mixin`` put in front of ``base``, its options ``base``'s
    plus ``extra_options`` (built torch-free in ``approach_options``). One place builds the wrapper approaches (2-stage, GVAlign) so each
    keeps the base method's loop, losses and options instead of copying them."""
    options = APPROACH_OPTIONS[f"{base.name}_{suffix}"]
    cls = type(
        f"{base.__name__}{class_suffix}",
        (mixin, base),
        {"name": f"{base.name}_{suffix}", "Options": options, "summary": summary, "__module__": module, **attrs},
    )
    return register_method(cls.name)(cls)
