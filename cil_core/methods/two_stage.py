"""The LT-CIL "2-stage" recipe (Liu et al., "Long-Tailed Class Incremental Learning", ECCV 2022)
on top of EEIL, LUCIR and PODNet: ``eeil_2stage``, ``lucir_2stage``, ``podnet_2stage``.

Stage 1 is the base method, unchanged. Stage 2, after every task (its extra stages and the
memory update included): the representation and the classifier are frozen and a learnable
weight scaling (LWS, Kang et al., ICLR 2020) ``z'_c = s_c * z_c`` -- one scale per seen class,
kept across tasks, new classes starting at 1 -- is learnt on the task's training set (new data
plus exemplars) drawn class-balanced (every class equally likely; the engine's
``Phase(balanced=True)``), with label-aware smoothing (LAS, Zhong et al., CVPR 2021): class c's
target is smoothed by ``e_c``, from ``smooth_head`` for the most frequent class to
``smooth_tail`` for the rarest. Prediction uses the scaled logits; the teacher of the next task
is the unscaled model.

Schedule, as the LT-CIL code's stage 2: 30 epochs, cosine annealing to 0, the scales' learning
rate a tenth of the run's. Departures from that code, which follow the paper/issue instead: the
public code also updates the newest task's classifier rows in stage 2 and uses plain
cross-entropy (``stage2_loss=ce``) while the paper's recipe is LAS on a frozen classifier; and
its ``eeil_2stage`` runs a single stage-2 epoch (``for e in range(1)``) where the LUCIR and
PODNet versions run 30 (``eeil_2stage.stage2_epochs=1`` reproduces that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import losses
from ..engine.learner import Phase
from ..ranges import at_least, one_of, positive, ranged
from ._shared import frozen_forward, register_variant
from .base import Method
from .eeil import EEIL
from .lucir import LUCIR
from .podnet import PODNet


@dataclass(frozen=True)
class TwoStageOptions:
    # LT-CIL code: ``self.stage2epoch = 30``.
    stage2_epochs: int = at_least(0, 30)
    # LT-CIL code, ``adjust_learning_rate_stage_2``: the LWS parameters' group runs at
    # ``(1 / lr_factor) * lr`` with lr_factor 10, cosine-annealed from the run's lr to 0.
    stage2_lr_factor: float = positive(0.1)
    # "las" (label-aware smoothing, the paper) or "ce" (what the public code computes).
    stage2_loss: str = one_of("las", "ce")
    # MiSLAS's CIFAR-100-LT (rho = 100) stage-2 config: ``smooth_head: 0.4``, ``smooth_tail: 0.1``,
    # concave shape (MiSLAS's default).
    smooth_head: float = ranged(0.4, low=0, high=1, high_open=True)
    smooth_tail: float = ranged(0.1, low=0, high=1, high_open=True)
    smooth_shape: str = one_of("concave", "linear", "convex")


class TwoStageMixin:
    """Adds LT-CIL's stage 2 to a :class:`~cil_core.methods.base.Method` (put it first in the bases)."""

    learner: Any
    opts: Any

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)  # type: ignore[call-arg]
        self.lws_scale: torch.Tensor | None = None  # per seen class

    def _scales(self, n_seen: int) -> torch.Tensor:
        """The kept scales, extended with ones for classes that have none yet."""
        device = self.learner.device
        kept = self.lws_scale if self.lws_scale is not None else torch.zeros(0, device=device)
        kept = kept.to(device)[:n_seen]
        return torch.cat([kept, torch.ones(n_seen - len(kept), device=device)])

    def after_train(self, ctx: Any) -> None:
        super().after_train(ctx)  # type: ignore[misc]
        self.lws_scale = self.fit_weight_scaling(ctx)

    def fit_weight_scaling(self, ctx: Any) -> torch.Tensor:
        opts, cfg, learner = self.opts, self.learner.config, self.learner
        n_seen = ctx.n_seen
        scale = nn.Parameter(self._scales(n_seen).clone())
        smoothing = losses.label_aware_smoothing(
            torch.as_tensor(np.asarray(ctx.train_counts), device=learner.device),
            opts.smooth_head, opts.smooth_tail, opts.smooth_shape,
        )
        base_logits = super().eval_logits  # type: ignore[misc]

        def scaled(out: dict[str, Any]) -> torch.Tensor:
            return base_logits(out, n_seen).float() * scale

        def terms(step: Any) -> dict[str, torch.Tensor]:
            logits = step.out["logits"]
            if opts.stage2_loss == "ce":
                return {"ce": torch.nn.functional.cross_entropy(logits, step.y)}
            return {"las": losses.label_aware_smoothing_loss(logits, step.y, smoothing)}

        learner.run_phase(
            Phase(
                name="stage2_lws",
                indices=self.train_indices(ctx),  # type: ignore[attr-defined]
                epochs=opts.stage2_epochs,
                lr=cfg.lr * opts.stage2_lr_factor,
                milestones=(),
                param_groups=[{"params": [scale]}],
                loss_terms=terms,
                weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size,
                momentum=cfg.momentum,
                balanced=True,
                forward=frozen_forward(learner.model, scaled),
                train_mode=False,
                use_teacher=False,
                schedule="cosine",
            )
        )
        return scale.detach()

    def eval_logits(self, out: dict[str, torch.Tensor], num_seen: int) -> torch.Tensor:
        logits = super().eval_logits(out, num_seen)  # type: ignore[misc]
        if self.lws_scale is None:
            return logits
        return logits.float() * self._scales(num_seen)

    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict())  # type: ignore[misc]
        state["lws_scale"] = None if self.lws_scale is None else self.lws_scale.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # type: ignore[misc]
        scale = state.get("lws_scale")
        self.lws_scale = None if scale is None else scale.to(self.learner.device)


def two_stage(base: type[Method]) -> type[Method]:
    """``<base>_2stage``: ``base`` with stage 2, its options plus :class:`TwoStageOptions`."""
    return register_variant(
        base, TwoStageMixin, TwoStageOptions, suffix="2stage", class_suffix="TwoStage", module=__name__,
        summary=f"{base.name} + LT-CIL 2-stage (class-balanced LWS with label-aware smoothing)",
    )


EEIL2Stage = two_stage(EEIL)
LUCIR2Stage = two_stage(LUCIR)
PODNet2Stage = two_stage(PODNet)
