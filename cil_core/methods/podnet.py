"""PODNet: Pooled Outputs Distillation for small-tasks incremental learning (Douillard et al.,
ECCV 2020).

- Local similarity classifier (LSC): ``K`` cosine proxies per class merged by a softmax over
  the class's proxies (:class:`~cil_core.engine.heads.LocalSimilarityHead`, LUCIR's cosine head
  with proxies and the learnt scale ``sigma``).
- POD-spatial: the squared activations of every backbone stage summed along the width and
  along the height, L2-normalised and matched to the frozen previous model's; POD-flat: ``1 -
  cos`` between the final embeddings. Both are weighted by their factor times
  ``sqrt(n_seen / n_new)`` (the reference's ``scheduled_factor``).
- The old classes' proxies are frozen (``groupwise_factors: old_weights: 0``).
- The backbone is the LT-CIL code's PODNet variant (``resnet32_podnet`` on CIFAR: no ReLU after
  any residual addition, parameter-free option-A shortcuts, so POD distils pre-activation
  maps; ``resnet18_podnet`` on the ImageNet family), see :mod:`cil_core.backbones.podnet_resnet`;
  ``podnet.reference_backbone=false`` keeps the run's plain backbone.

As in the LT-CIL benchmark, the run's step schedule is used and there is neither weight
imprinting for new proxies nor the reference's class-balanced fine-tuning of the classifier.

The classifier loss. The LT-CIL code (``podnet.py``/``podnet_2stage.py``, and GVAlign's
``podnet_gvalign_2stage.py``, which copies it) calls ``nca(outputs, targets)`` with the
defaults ``margin=0.6, scale=1, exclude_pos_denominator=False``: it computes ``outputs -
0.6`` -- the margin subtracted from *every* class, not only the true one -- and returns the
cross-entropy of that, which the shift cannot change. What produced the published numbers is
therefore plain softmax cross-entropy on the scaled similarities ``sigma * sim``: the default
``classifier_loss="ce"``. ``classifier_loss="nca"`` is the paper's LSC loss (margin 0.6 on the
true class, the true class left out of the denominator), with the margin subtracted after
the learnt scale (PyCIL's arrangement; Douillard's ``scale * (sim - margin)`` with a learnt
scale has a degenerate minimum where the scale runs negative).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import losses
from ..backbones.podnet_resnet import podnet_backbone_name
from ..engine.heads import LocalSimilarityHead
from ..registry import register_method
from .base import Method
from ..approach_options import PODNetOptions as Options


@register_method("podnet")
class PODNet(Method):
    name = "podnet"
    Options = Options
    needs_teacher = True
    summary = "PODNet (Douillard et al. 2020): POD-spatial + POD-flat distillation, local-similarity classifier"

    def backbone_kwargs(self) -> dict[str, Any]:
        # The reference extracts features before the last activation (``extract_no_act``).
        return {"last_relu": False}

    def backbone_name(self, configured: str) -> str:
        if not self.opts.reference_backbone:
            return configured
        return podnet_backbone_name(configured)

    def make_head(self, in_features: int) -> torch.nn.Module:
        return LocalSimilarityHead(in_features, proxies=self.opts.proxies)

    def before_task(self, ctx) -> None:
        self.model.head.weight_old.requires_grad_(not (self.opts.freeze_old and ctx.task > 0))

    def optimizer_params(self, ctx) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        logits = step.out["logits"][:, : ctx.n_seen].float()  # sigma * merged proxy cosines
        if self.opts.classifier_loss == "nca":
            terms = {"nca": losses.nca_loss(logits, step.y, 1.0, self.opts.nca_margin)}
        else:
            terms = {"ce": F.cross_entropy(logits, step.y)}
        if ctx.n_old == 0 or step.teacher_out is None:
            return terms
        schedule = math.sqrt(ctx.n_seen / (ctx.n_seen - ctx.n_old))
        if self.opts.pod_flat > 0:
            terms["pod_flat"] = self.opts.pod_flat * schedule * losses.cosine_embedding_distance(
                step.out["features"], step.teacher_out["features"]
            )
        if self.opts.pod_spatial > 0:
            terms["pod_spatial"] = self.opts.pod_spatial * schedule * losses.pod_spatial_loss(
                step.teacher_out["maps"], step.out["maps"]
            )
        return terms
