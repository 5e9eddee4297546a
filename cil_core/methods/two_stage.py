"""The LT-CIL "2-stage" recipe (Liu et al., "Long-Tailed Class Incremental Learning", ECCV 2022)
on top of EEIL, LUCIR and PODNet: ``eeil_2stage``, ``lucir_2stage``, ``podnet_2stage``.

Stage 1 is the base method, unchanged. Stage 2, after every task (its extra stages and the
memory update included), as the public code (``lucir_2stage.py``, ``podnet_2stage.py``,
``eeil_2stage.py`` of xialeiliu/Long-Tailed-CIL) has it:

- what learns: a learnable weight scaling (LWS, Kang et al., ICLR 2020) ``z'_c = s_c * z_c`` --
  one scale per seen class, kept across tasks, new classes starting at 1 -- TOGETHER with the
  newest task's classifier: for LUCIR and PODNet the new classes' rows and the shared scale
  ``sigma`` (``self.model.heads[-1].parameters()``; LUCIR without less-forget trains every row,
  as its stage 1 does), for EEIL the new classes' weight rows and biases. The backbone and its
  BatchNorm statistics are frozen.
- on what: the task's training set (new data plus the exemplars kept before this task), drawn
  class-balanced (every class equally likely; the engine's ``Phase(balanced=True)``).
- the loss: plain cross-entropy on the scaled logits (``stage2_loss="ce"``); the code imports
  MiSLAS's label-aware smoothing but never calls it (``stage2_loss="las"`` turns it on).
- the learning rates (``adjust_learning_rate_stage_2``, called after each epoch): both groups
  start at the run's lr for the first epoch; after epoch ``e`` the classifier's group is set to
  ``lr * (1 + cos(pi e / E)) / 2`` and the scales' to that divided by ``lr_factor`` (10);
  the run's momentum and weight decay on both.
- how long: 30 epochs for LUCIR and PODNet (``self.stage2epoch = 30``), one for EEIL
  (``for e in range(1)``).
- LUCIR-2stage only: stage 1 is skipped on a task whose new data average 10 or fewer images per
  class (``if len(trn_loader.dataset) > 10 * task_cls[t]``); stage 2 still runs
  (``lucir_2stage.stage1_min_per_class=0`` always trains).

Prediction uses the scaled logits; the next task's teacher is the model after stage 2 without
the scales. The batches come from the code's ``ClassAwareSampler``
(:class:`~cil_core.data.samplers.ClassAwareSampler`: classes in a shuffled cycle, 4 images of a
class per visit, in batch order); ``stage2_sampler="iid"`` draws every image independently with
equal class probability instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..data.samplers import ClassAwareSampler
from ..engine.heads import CosineHead
from ._building_blocks import register_variant
from .base import Method
from .eeil import EEIL
from .lucir import LUCIR
from .podnet import PODNet
from ..approach_options import EEILTwoStageOptions, LUCIRTwoStageOptions, TwoStageOptions


def stage2_lr_lambdas(epochs: int, lr_factor: float) -> tuple[Callable[[int], float], Callable[[int], float]]:
    """The classifier's and the scales' lr multipliers for each stage-2 epoch: 1 in the first
    epoch (the optimiser's initial lr), then ``adjust_learning_rate_stage_2(e)``'s cosine."""

    def cosine(epoch: int) -> float:
        return 1.0 if epoch == 0 else 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    return cosine, (lambda epoch: 1.0 if epoch == 0 else lr_factor * cosine(epoch))


class TwoStageMixin:
    """Adds LT-CIL's stage 2 to a :class:`~cil_core.methods.base.Method` (put it first in the bases)."""

    opts: Any
    # Members of the approach surface (Method's) this mixin uses, for the type checker.
    model: Any
    device: Any
    train_labels: Any
    generator: Any
    run_stage: Any

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)  # type: ignore[call-arg]
        self.lws_scale: torch.Tensor | None = None  # per seen class

    def _scales(self, n_seen: int) -> torch.Tensor:
        """The kept scales, extended with ones for classes that have none yet."""
        device = self.device
        kept = self.lws_scale if self.lws_scale is not None else torch.zeros(0, device=device)
        kept = kept.to(device)[:n_seen]
        return torch.cat([kept, torch.ones(n_seen - len(kept), device=device)])

    def after_train(self, ctx: Any) -> None:
        super().after_train(ctx)  # type: ignore[misc]
        self.lws_scale = self.fit_weight_scaling(ctx)

    def skips_main_phase(self, ctx: Any) -> bool:
        minimum = getattr(self.opts, "stage1_min_per_class", 0.0)
        n_new = ctx.n_seen - ctx.n_old
        if minimum <= 0 or n_new <= 0:
            return super().skips_main_phase(ctx)  # type: ignore[misc]
        return len(ctx.new_indices) <= minimum * n_new or super().skips_main_phase(ctx)  # type: ignore[misc]

    def stage2_classifier(self, ctx: Any) -> tuple[list[nn.Parameter], Callable[[torch.Tensor], torch.Tensor], Callable[[], None]]:
        """``(parameters, features -> logits, commit)`` of the classifier part stage 2 trains:
        a cosine head's newest rows and ``sigma`` (the rows its stage 1 trains), or a linear
        head's newest rows and biases, learnt as copies that ``commit`` writes back."""
        head = self.model.head
        if not self.opts.stage2_train_head:
            return [], head, lambda: None
        if isinstance(head, CosineHead):
            params = [p for p in (head.weight_old, head.weight_new, head.sigma) if p.requires_grad and p.numel() > 0]
            return params, head, lambda: None
        n_old, n_seen = ctx.n_old, ctx.n_seen
        weight = nn.Parameter(head.weight.detach()[n_old:n_seen].clone())
        bias = nn.Parameter(head.bias.detach()[n_old:n_seen].clone())

        def logits(features: torch.Tensor) -> torch.Tensor:
            w = torch.cat([head.weight.detach()[:n_old], weight])
            b = torch.cat([head.bias.detach()[:n_old], bias])
            return F.linear(features, w, b)

        def commit() -> None:
            with torch.no_grad():
                head.weight[n_old:n_seen] = weight
                head.bias[n_old:n_seen] = bias

        return [weight, bias], logits, commit

    def fit_weight_scaling(self, ctx: Any) -> torch.Tensor:
        opts = self.opts
        n_seen = ctx.n_seen
        model = self.model
        scale = nn.Parameter(self._scales(n_seen).clone())
        smoothing = losses.label_aware_smoothing(
            torch.as_tensor(np.asarray(ctx.train_counts), device=self.device),
            opts.smooth_head, opts.smooth_tail, opts.smooth_shape,
        )
        base_logits = super().eval_logits  # type: ignore[misc]
        head_params, head_logits, commit = self.stage2_classifier(ctx)

        def forward(x: torch.Tensor) -> dict[str, Any]:
            with torch.no_grad():
                out = dict(model.backbone(x))
            out["logits"] = base_logits({**out, "logits": head_logits(out["features"])}, n_seen).float() * scale
            return out

        def terms(step: Any) -> dict[str, torch.Tensor]:
            logits = step.out["logits"]
            if opts.stage2_loss == "ce":
                return {"ce": F.cross_entropy(logits, step.y)}
            return {"las": losses.label_aware_smoothing_loss(logits, step.y, smoothing)}

        indices = self.train_indices(ctx)
        sampler = None
        if opts.stage2_sampler == "class_aware" and len(indices) > 0:
            sampler = ClassAwareSampler(indices, self.train_labels[indices], self.generator).epoch
        self.run_stage(
            "stage2_lws",
            indices=indices,
            epochs=opts.stage2_epochs,
            param_groups=[{"params": head_params}, {"params": [scale]}],
            loss_terms=terms,
            balanced=True,
            epoch_indices=sampler,
            forward=forward,
            train_mode=False,
            use_teacher=False,
            schedule="lambda",
            lr_lambdas=stage2_lr_lambdas(opts.stage2_epochs, opts.stage2_lr_factor),
        )
        commit()
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
        self.lws_scale = None if scale is None else scale.to(self.device)


def two_stage(base: type[Method], options: type = TwoStageOptions) -> type[Method]:
    """``<base>_2stage``: ``base`` with stage 2, its options plus ``options``."""
    return register_variant(
        base, TwoStageMixin, options, suffix="2stage", class_suffix="TwoStage", module=__name__,
        summary=f"{base.name} + LT-CIL 2-stage (class-balanced LWS with the newest classifier rows)",
    )


EEIL2Stage = two_stage(EEIL, EEILTwoStageOptions)
LUCIR2Stage = two_stage(LUCIR, LUCIRTwoStageOptions)
PODNet2Stage = two_stage(PODNet)
