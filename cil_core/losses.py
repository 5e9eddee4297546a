"""Loss functions shared by the approaches; pure tensor functions, testable alone."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD as LwF uses it: -mean_batch sum_c softmax(t/T)_c log_softmax(s/T)_c (no T^2)."""
    return -(F.softmax(teacher / temperature, 1) * F.log_softmax(student / temperature, 1)).sum(1).mean()


def normalised_entropy(q: torch.Tensor, eps: float = 0.001) -> torch.Tensor:
    """Entropy of ``(q + eps) / sum`` divided by ``log(len(q))``: 1 for uniform, 0 for a spike.

    DGR's ``rho_H``. With a single old class the ratio is 0/0; it is defined as 1 there
    (all weight on the plain KD term, the natural limit of "no imbalance to correct").
    """
    if q.numel() <= 1:
        return torch.ones((), dtype=q.dtype, device=q.device)
    prob = (q + eps) / (q + eps).sum()
    return -(prob * prob.log()).sum() / math.log(q.numel())


def removed_share(q: torch.Tensor) -> torch.Tensor:
    """DGR's ``p``: q / sum(q), then divided by its L2 norm; zeros when nothing was removed."""
    total = q.sum()
    p = torch.where(total > 0, q / total.clamp_min(1e-12), torch.zeros_like(q))
    norm = p.norm()
    return torch.where(norm > 0, p / norm.clamp_min(1e-12), p)


def dakd_loss(student_old: torch.Tensor, teacher_old: torch.Tensor, p: torch.Tensor, rho_h: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distribution-aware KD (DGR, METHOD.md 2.4), without the beta * T^2 scale.

    ``z' = p * z_old + (1 - p) * s`` leans the distilled logits toward the teacher for the
    classes that lost the most images; ``rho_h`` mixes it with plain KD on ``z_old``.
    """
    mixed = p * student_old + (1 - p) * teacher_old
    target = F.softmax(teacher_old / temperature, 1)
    log_plain = F.log_softmax(student_old / temperature, 1)
    log_mixed = F.log_softmax(mixed / temperature, 1)
    return -(target * (rho_h * log_plain + (1 - rho_h) * log_mixed)).sum(1).mean()


def dakd_logit_grad(student_old: torch.Tensor, teacher_old: torch.Tensor, p: torch.Tensor, rho_h: torch.Tensor, temperature: float) -> torch.Tensor:
    """Closed-form d dakd_loss / d student_old (the softmax-CE gradient, twice, chained through z').

    Used by the tests to check the autograd path and by benchmarks as the cheap route.
    """
    batch = student_old.shape[0]
    target = F.softmax(teacher_old / temperature, 1)
    mixed = p * student_old + (1 - p) * teacher_old
    plain = F.softmax(student_old / temperature, 1) - target
    through_mixed = p * (F.softmax(mixed / temperature, 1) - target)
    return (rho_h * plain + (1 - rho_h) * through_mixed) / (temperature * batch)
