"""LwF: Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), class-incremental.

Cross-entropy over all seen classes plus Hinton knowledge distillation that keeps the old
classes' softened outputs close to those of the model frozen after the previous task. As in
the LT-CIL benchmark (FACIL's ``lwf``), the old classes form one softmax and the exemplar
memory is used like every other method of the comparison; ``lwf.exemplars=false`` gives the
paper's exemplar-free setting.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from ..registry import register_method
from ._building_blocks import KnowledgeDistillationMixin
from .base import Method
from ..approach_options import LwFOptions as Options


@register_method("lwf")
class LwF(KnowledgeDistillationMixin, Method):
    name = "lwf"
    Options = Options
    summary = "LwF (Li & Hoiem 2016): cross-entropy + KD on the old logits, T = 2"

    def train_indices(self, ctx) -> np.ndarray:
        if not self.opts.exemplars:
            return np.asarray(ctx.new_indices, dtype=np.int64)
        return super().train_indices(ctx)

    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(step.out["logits"][:, : step.ctx.n_seen].float(), step.y)}
        kd = self.kd_term(step, self.opts.temperature)
        if kd is not None:
            terms["kd"] = self.opts.lamb * kd
        return terms
