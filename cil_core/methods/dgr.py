"""DGR: Gradient Reweighting (He, CVPR 2024), as specified in METHOD.md section 2.

Per batch the engine hands over each loss term's gradient w.r.t. the logits
(``G_ce``, ``G_kd``: batch x classes) and the features ``F`` (batch x dim). The per-class
classifier gradients are then ``G^T F`` (one matmul), their row norms give the per-class
gradient magnitudes, and every reweighting below is a handful of vector operations on
the device: no per-class Python loop, no host synchronisation (the reference code loops
over rows and copies norms to the host every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ..engine.execution import in_fp32
from ..registry import register_method
from .base import Method
from ..approach_options import DGROptions as Options


@dataclass
class TaskStatistics:
    """What DGR derives from the class counts once per task (METHOD.md 2.1, 2.3, 2.4)."""

    log_prior: torch.Tensor  # log pi_c over seen classes
    gamma: float  # attenuation exp(-N_seen / (N_seen + N_new))
    beta: float  # 0.7 * sqrt(N_seen / N_new)
    p: torch.Tensor  # normalised share of removed images per old class
    rho_h: torch.Tensor  # normalised entropy of the removed counts


def task_statistics(
    *, train_counts: np.ndarray, class_counts: np.ndarray, n_old: int, options: Options, device: torch.device
) -> TaskStatistics:
    """``train_counts``: images per seen class in this task's training set (old: exemplars);
    ``class_counts``: all training images each seen class ever had (after the hold-out)."""
    counts = torch.as_tensor(train_counts, dtype=torch.float32, device=device)
    log_prior = torch.log(counts / counts.sum())
    if n_old == 0:
        empty = torch.zeros(0, device=device)
        return TaskStatistics(log_prior, 1.0, 0.0, empty, torch.ones((), device=device))
    n_seen_images = float(np.sum(class_counts[:n_old]))
    n_new_images = float(np.sum(class_counts[n_old:]))
    gamma = math.exp(-n_seen_images / (n_seen_images + n_new_images)) if options.attenuation else 1.0
    beta = options.kd_base * math.sqrt(n_seen_images / n_new_images)
    removed = torch.as_tensor(
        np.asarray(class_counts[:n_old], dtype=np.float64) - np.asarray(train_counts[:n_old], dtype=np.float64),
        dtype=torch.float32,
        device=device,
    ).clamp_min(0)
    return TaskStatistics(
        log_prior=log_prior,
        gamma=gamma,
        beta=beta,
        p=losses.removed_share(removed),
        rho_h=losses.normalised_entropy(removed),
    )


def reweighted_classifier_gradient(
    *,
    grad_ce: torch.Tensor,
    grad_kd: torch.Tensor | None,
    features: torch.Tensor,
    accumulated: torch.Tensor,
    n_old: int,
    gamma: float,
    options: Options,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DGR's classifier gradient (METHOD.md 2.2, 2.3, 2.5) from logit gradients and features.

    Returns ``(weight_grad, bias_grad, accumulated)``: ``accumulated`` is Phi after adding
    this step's per-class CE gradient norms (the caller keeps it for the next step).
    """
    # Detached: the result is a gradient, not part of the model's graph. Without this the
    # features (which require grad) tie every step's Phi and classifier gradient into one
    # autograd graph that grows by a node chain per step for the whole task.
    features = features.detach().float()
    grad_ce = grad_ce.detach().float()
    accumulated = accumulated.detach()
    grad_kd = grad_kd.detach() if grad_kd is not None else None
    weight_ce = grad_ce.t() @ features  # (C, D): row c is dL_ce/dW_c
    bias_ce = grad_ce.sum(0)
    norms_ce = weight_ce.norm(dim=1)
    accumulated = accumulated + norms_ce
    alpha = torch.ones_like(accumulated)
    if options.intra_phase:
        if n_old == 0:
            alpha = accumulated.min() / accumulated
        else:
            old, new = accumulated[:n_old], accumulated[n_old:]
            alpha = torch.cat([old.min() / old, new.min() / new])
    if n_old == 0:
        return alpha[:, None] * weight_ce, alpha * bias_ce, accumulated
    weights = alpha
    if options.inter_phase:
        ratio = accumulated[n_old:].mean() / accumulated[:n_old].mean()
        r_old = ratio.clamp(max=1.0)
        r_new = (gamma * ratio).clamp(max=1.0)
        weights = alpha * torch.cat([r_old.expand(n_old), r_new.expand(len(accumulated) - n_old)])
    weight_grad = weights[:, None] * weight_ce
    bias_grad = weights * bias_ce
    if grad_kd is not None:
        grad_kd_old = grad_kd[:, :n_old].float()
        weight_kd = grad_kd_old.t() @ features
        bias_kd = grad_kd_old.sum(0)
        numerator = (weights * norms_ce).norm()
        denominator = weight_kd.norm(dim=1).norm()
        k = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-30), torch.zeros_like(numerator))
        weight_grad = torch.cat([weight_grad[:n_old] + k * weight_kd, weight_grad[n_old:]])
        bias_grad = torch.cat([bias_grad[:n_old] + k * bias_kd, bias_grad[n_old:]])
    return weight_grad, bias_grad, accumulated


@register_method("dgr")
class DGR(Method):
    name = "dgr"
    Options = Options
    needs_teacher = True
    splits_classifier_gradient = True
    summary = "DGR (CVPR 2024): logit-adjusted CE, gradient reweighting, DAKD"

    def before_task(self, ctx) -> None:
        self.stats = task_statistics(
            train_counts=ctx.train_counts,
            class_counts=ctx.class_counts,
            n_old=ctx.n_old,
            options=self.opts,
            device=self.device,
        )
        # Phi: per-class accumulated CE gradient norms, for the current task only.
        self.accumulated = torch.zeros(ctx.n_seen, device=self.device)

    @in_fp32
    def loss_terms(self, step) -> dict[str, torch.Tensor]:
        ctx = step.ctx
        logits = step.out["logits"][:, : ctx.n_seen].float()
        adjusted = logits + self.stats.log_prior if self.opts.logit_adjust else logits
        terms = {"ce": F.cross_entropy(adjusted, step.y)}
        if ctx.n_old > 0 and step.teacher_out is not None:
            temperature = self.opts.temperature
            student_old = logits[:, : ctx.n_old]
            teacher_old = step.teacher_out["logits"][:, : ctx.n_old].float()
            if self.opts.dakd:
                kd = losses.dakd_loss(student_old, teacher_old, self.stats.p, self.stats.rho_h, temperature)
            else:
                kd = losses.kd_loss(student_old, teacher_old, temperature)
            terms["kd"] = self.stats.beta * temperature**2 * kd
        return terms

    @in_fp32
    def classifier_gradient(self, step, logit_grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        n_seen = step.ctx.n_seen
        weight_grad, bias_grad, self.accumulated = reweighted_classifier_gradient(
            grad_ce=logit_grads["ce"][:, :n_seen],
            grad_kd=logit_grads["kd"][:, :n_seen] if "kd" in logit_grads else None,
            features=step.out["features"],
            accumulated=self.accumulated,
            n_old=step.ctx.n_old,
            gamma=self.stats.gamma,
            options=self.opts,
        )
        return weight_grad, bias_grad
