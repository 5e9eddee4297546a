"""LUCIR: Learning a Unified Classifier Incrementally via Rebalancing (Hou et al., CVPR 2019).

- Cosine normalisation (Sec. 3.2, Eq. 4): logits ``eta * cos(f, w_c)`` with one learnt scale
  ``eta`` (:class:`~cil_core.engine.heads.CosineHead`), and the last ReLU of the backbone
  removed so features can be negative (Sec. 4.1).
- Less-forget constraint (Eq. 6): ``lambda * (1 - cos(f, f*))`` between the current
  and the frozen previous model's features, with the adaptive weight (Eq. 7)
  ``lambda = lambda_base * sqrt(|C_old| / |C_new|)``. With it, the old classes' weights are
  frozen (the official code's "fix previous heads" when less-forget is on).
- Inter-class separation (Sec. 3.4, Eq. 8): for each old-class sample, a margin ranking loss
  between its ground-truth cosine and each of the top-K new-class cosines.

The LT-CIL benchmark's LUCIR (``lucir.py`` of xialeiliu/Long-Tailed-CIL) is what produced the
comparison's numbers; defaults follow it where it departs from the official LUCIR code (new
class weights start random instead of being imprinted; ``lucir.imprint=true`` restores the
official code's imprinting). The official code's optional class-balanced fine-tuning (CBF: the
classifier, old and new rows, re-trained on the exemplar memory over fixed features) is not
part of the benchmark and off by default (``lucir.cbf_epochs=20`` turns it on).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import losses
from ..engine.heads import CosineHead
from ..registry import register_method
from ._building_blocks import fraction_milestones, frozen_backbone_forward
from .base import Method
from ..approach_options import LUCIROptions as Options
from ..approach_options import reference_lamb_base  # noqa: F401  (re-exported: the rule lives with the options)


def adaptive_lambda(lamb_base: float, n_old: int, n_new: int, adaptive: bool = True) -> float:
    """LUCIR Eq. 7: ``lambda_base * sqrt(n_old / n_new)`` (or ``lambda_base``)."""
    return lamb_base * math.sqrt(n_old / n_new) if adaptive else lamb_base


@register_method("lucir")
class LUCIR(Method):
    name = "lucir"
    Options = Options
    needs_teacher = True
    summary = "LUCIR (Hou et al. 2019): cosine classifier, less-forget, margin ranking, adaptive lambda"

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)
        self.lamb = 0.0

    def backbone_kwargs(self) -> dict[str, Any]:
        # Sec. 4.1: "the ReLU in the penultimate layer is removed to allow the features to take
        # both positive and negative values".
        return {"last_relu": False}

    def make_head(self, in_features: int) -> torch.nn.Module:
        return CosineHead(in_features)

    @property
    def base_lambda(self) -> float:
        return self.opts.resolve_defaults(self.dataset, self.name).lamb_base

    @property
    def freezes_old_weights(self) -> bool:
        return self.opts.less_forget

    def before_task(self, ctx) -> None:
        head = self.model.head
        head.weight_old.requires_grad_(not (self.freezes_old_weights and ctx.task > 0))
        if ctx.n_old > 0:
            self.lamb = adaptive_lambda(self.base_lambda, ctx.n_old, ctx.n_seen - ctx.n_old, self.opts.adaptive_lambda)
            if self.opts.imprint:
                self.imprint_new_rows(ctx)

    def imprint_new_rows(self, ctx) -> None:
        """Official LUCIR's weight imprinting: each new row is the normalised mean of the
        normalised features (previous model) of its class, scaled to the old rows' mean norm."""
        head = self.model.head
        feats, labels = self.features(ctx.new_indices)
        means, counts = losses.normalised_class_means(feats, labels.long(), ctx.n_seen)
        means = means[ctx.n_old :].repeat_interleave(head.proxies, dim=0)
        scale = head.weight_old.detach().norm(dim=1).mean()
        with torch.no_grad():
            keep = (counts[ctx.n_old :] > 0).repeat_interleave(head.proxies)[:, None]
            head.weight_new.copy_(torch.where(keep, means * scale, head.weight_new))

    def optimizer_params(self, ctx) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        logits = step.out["logits"][:, : ctx.n_seen].float()
        terms = {"ce": F.cross_entropy(logits, step.y)}
        if ctx.n_old == 0 or step.teacher_out is None:
            return terms
        if self.opts.less_forget:
            terms["less_forget"] = self.lamb * losses.cosine_embedding_distance(
                step.out["features"], step.teacher_out["features"]
            )
        if self.opts.margin_ranking:
            cosines = self.model.head.similarity(step.out["features"])[:, : ctx.n_seen]
            terms["margin_ranking"] = self.opts.lamb_mr * losses.margin_ranking_loss(
                cosines, step.y, ctx.n_old, self.opts.K, self.opts.margin
            )
        return terms

    def after_train(self, ctx) -> None:
        super().after_train(ctx)
        memory = self.memory.indices()
        if self.opts.cbf_epochs <= 0 or ctx.task == 0 or len(memory) == 0:
            return
        head = self.model.head
        frozen = head.weight_old.requires_grad
        head.weight_old.requires_grad_(True)
        try:
            self.run_stage(
                "class_balanced_finetune",
                indices=memory,
                epochs=self.opts.cbf_epochs,
                param_groups=[{"params": [head.weight_old, head.weight_new]}],
                loss_terms=self.loss_terms,
                lr=self.opts.cbf_lr,
                milestones=fraction_milestones(self.opts.cbf_epochs, (0.5,)),
                forward=frozen_backbone_forward(self.model),
                train_mode=False,
            )
        finally:
            head.weight_old.requires_grad_(frozen)

    def state_dict(self) -> dict[str, Any]:
        return {"lamb": self.lamb}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lamb = float(state.get("lamb", 0.0))
