"""Loss functions shared by the approaches; pure tensor functions, testable alone."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# FACIL's ``cross_entropy(..., eps=1e-5)`` (LwF, BiC): the student's softened distribution is
# smoothed by eps / C and renormalised before its log.
FACIL_KD_EPS = 1e-5


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, eps: float = 0.0) -> torch.Tensor:
    """Hinton KD as LwF uses it: -mean_batch sum_c softmax(t/T)_c log q_c (no T^2), where
    q = softmax(s/T), or with ``eps`` > 0 FACIL's ``(q + eps/C) / sum(q + eps/C)``."""
    target = F.softmax(teacher / temperature, 1)
    if eps <= 0:
        return -(target * F.log_softmax(student / temperature, 1)).sum(1).mean()
    q = F.softmax(student / temperature, 1) + eps / student.shape[1]
    return -(target * (q / q.sum(1, keepdim=True)).log()).sum(1).mean()


def softmax_bce_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """FACIL's EEIL distillation for one classification layer: the element-wise mean binary
    cross-entropy between softmax(s/T) (input) and softmax(t/T) (target), no T^2.

    ``binary_cross_entropy`` itself (not a log-softmax form) so its clamp of the logs at -100
    matches the reference to the bit; it must run outside autocast (the engine computes losses
    there)."""
    return F.binary_cross_entropy(F.softmax(student / temperature, 1), F.softmax(teacher / temperature, 1))


def icarl_reference_loss(logits: torch.Tensor, targets: torch.Tensor, teacher_old: torch.Tensor | None, lamb: float) -> torch.Tensor:
    """The LT-CIL/FACIL iCaRL criterion: softmax cross-entropy over every seen class plus
    ``lamb`` x sum over the old classes of the batch-mean BCE between the student's and the
    teacher's sigmoid outputs (``F.binary_cross_entropy(sigmoid(s), sigmoid(t))``)."""
    loss = F.cross_entropy(logits, targets)
    if teacher_old is None or teacher_old.shape[1] == 0:
        return loss
    n_old = teacher_old.shape[1]
    bce = F.binary_cross_entropy(torch.sigmoid(logits[:, :n_old]), torch.sigmoid(teacher_old), reduction="none")
    return loss + lamb * bce.sum(1).mean()


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


# --------------------------------------------------------------------------- baselines
# The loss terms of the comparison methods (cil_core/methods/), each a pure tensor function
# testable alone; the methods add the weights and pick the inputs.


def blockwise_kd_loss(student: torch.Tensor, teacher: torch.Tensor, bounds: list[tuple[int, int]], temperature: float) -> torch.Tensor:
    """:func:`kd_loss` summed over class blocks ``[(start, end), ...]`` (EEIL: one distillation
    term per old classification layer, each softmax taken within its own task's classes)."""
    total = student.new_zeros(())
    for start, end in bounds:
        total = total + kd_loss(student[:, start:end], teacher[:, start:end], temperature)
    return total


def icarl_bce(logits: torch.Tensor, targets: torch.Tensor, teacher_old: torch.Tensor | None) -> torch.Tensor:
    """iCaRL's classification-plus-distillation loss (Rebuffi et al. 2017, Alg. 3).

    Sigmoid binary cross-entropy over all seen classes: the targets of the new classes are
    one-hot, those of the ``n_old = teacher_old.shape[1]`` old classes the teacher's sigmoid
    outputs. Summed over classes, averaged over the batch (the paper's equation).
    """
    target = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
    if teacher_old is not None and teacher_old.shape[1] > 0:
        n_old = teacher_old.shape[1]
        target = torch.cat([torch.sigmoid(teacher_old.to(logits.dtype)), target[:, n_old:]], dim=1)
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()


def nearest_mean_logits(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """iCaRL's nearest-mean-of-exemplars rule as logits: minus the Euclidean distance between
    the L2-normalised feature and each (normalised) class mean, so argmax = nearest mean."""
    return -torch.cdist(F.normalize(features.float(), dim=1), means.float())


def normalised_class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean of L2-normalised features, re-normalised ("All feature vectors are
    L2-normalized, and the results of any operation on feature vectors, e.g. averages are also
    re-normalized", iCaRL p. 2). Returns ``(means (C, D), counts (C,))``; classes without
    features get a zero mean and count 0."""
    feats = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, feats.shape[1], device=feats.device).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    means = F.normalize(sums / counts.clamp_min(1)[:, None], dim=1)
    return means, counts


def cosine_embedding_distance(features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """``mean(1 - cos(f, f*))``: LUCIR's less-forget constraint (Eq. 6) and PODNet's POD-flat
    (``F.cosine_embedding_loss`` with target 1)."""
    return (1.0 - F.cosine_similarity(features.float(), teacher_features.float(), dim=1)).mean()


def margin_ranking_loss(scores: torch.Tensor, targets: torch.Tensor, n_old: int, k: int, margin: float) -> torch.Tensor:
    """LUCIR's inter-class separation (Sec. 3.4, Eq. 8) on unscaled cosine scores.

    For each sample of an old class, its ground-truth score is ranked above each of the top-``k``
    new-class scores by ``margin``: ``mean over (old sample, negative) of max(0, m - s_gt + s_neg)``.
    Zero when the batch holds no old-class sample (no host synchronisation either way).
    """
    n_new = scores.shape[1] - n_old
    k = min(k, n_new)
    if n_old == 0 or k <= 0:
        return scores.new_zeros(())
    gt = scores.gather(1, targets[:, None])
    hardest = scores[:, n_old:].topk(k, dim=1).values
    per_pair = (margin - gt + hardest).clamp_min(0)
    mask = (targets < n_old).to(per_pair.dtype)[:, None]
    return (per_pair * mask).sum() / (mask.sum() * k).clamp_min(1)


def nca_loss(similarities: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor | float, margin: float, exclude_positive: bool = True) -> torch.Tensor:
    """PODNet's NCA loss with a margin on the true class (the reference code's ``losses.nca``).

    ``s = scale * (sim - margin * onehot)``, shifted by its row maximum; the loss is
    ``-(s_y - log sum_j exp(s'_j))`` where ``s'`` is ``s`` with the true class's entry set to 0
    (the reference's ``similarities - disable_pos``: after the shift the true class still adds
    ``exp(0) = 1`` to the denominator). ``exclude_positive=False``: plain cross-entropy on ``s``.
    """
    onehot = F.one_hot(targets, similarities.shape[1]).to(similarities.dtype)
    s = scale * (similarities - margin * onehot)
    if not exclude_positive:
        return F.cross_entropy(s, targets)
    s = s - s.max(1, keepdim=True).values
    positive = (s * onehot).sum(1)
    denominator = s * (1 - onehot)
    return -(positive - torch.logsumexp(denominator, dim=1)).mean()


def pod_spatial_loss(old_maps: list[torch.Tensor], new_maps: list[torch.Tensor]) -> torch.Tensor:
    """PODNet's POD-spatial distillation, averaged over the stages (reference ``pod``,
    ``collapse_channels="spatial"``).

    Per stage: square the activations, sum them over the width (a (C x H) profile) and over
    the height (C x W), concatenate, L2-normalise per sample; the loss is the mean over the
    batch of the Euclidean distance between the old and the new model's vectors.
    """
    total = new_maps[0].new_zeros((), dtype=torch.float32)
    for old, new in zip(old_maps, new_maps):
        if old.shape != new.shape:
            raise ValueError(f"POD: stage shapes differ, {tuple(old.shape)} vs {tuple(new.shape)}")
        a, b = old.float().pow(2), new.float().pow(2)
        a = torch.cat([a.sum(3).flatten(1), a.sum(2).flatten(1)], dim=1)
        b = torch.cat([b.sum(3).flatten(1), b.sum(2).flatten(1)], dim=1)
        total = total + (F.normalize(a, dim=1) - F.normalize(b, dim=1)).norm(dim=1).mean()
    return total / max(1, len(new_maps))


def label_aware_smoothing(counts: torch.Tensor, smooth_head: float, smooth_tail: float, shape: str = "concave") -> torch.Tensor:
    """Per-class smoothing factors of label-aware smoothing (MiSLAS, Zhong et al., CVPR 2021).

    The most frequent class gets ``smooth_head``, the rarest ``smooth_tail``, the others follow
    ``shape`` of ``x = (n_c - n_min) / (n_max - n_min)``: ``concave`` ``sin(pi x / 2)``,
    ``linear`` ``x``, ``convex`` ``1 - cos(pi x / 2)``. When all counts are equal ``x = 0``
    (every class gets ``smooth_tail``; MiSLAS divides by zero there).
    """
    counts = counts.float()
    span = counts.max() - counts.min()
    x = torch.where(span > 0, (counts - counts.min()) / span.clamp_min(1e-12), torch.zeros_like(counts))
    if shape == "concave":
        g = torch.sin(x * math.pi / 2)
    elif shape == "linear":
        g = x
    elif shape == "convex":
        g = 1 - torch.cos(x * math.pi / 2)
    else:
        raise ValueError(f"unknown smoothing shape {shape!r}; use concave, linear or convex")
    return smooth_tail + (smooth_head - smooth_tail) * g


def label_aware_smoothing_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """MiSLAS's LAS loss: ``mean_i [(1 - e_yi) * (-log p_yi) + e_yi * mean_c(-log p_c)]``."""
    log_p = F.log_softmax(logits.float(), dim=1)
    eps = smoothing[targets]
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_p.mean(1)
    return ((1 - eps) * nll + eps * uniform).mean()


def mixup_cross_entropy(logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor, lam: float) -> torch.Tensor:
    """Mixup's loss (Zhang et al., ICLR 2018) on the logits of mixed inputs
    ``lam * x_i + (1 - lam) * x_perm(i)``: ``lam * CE(logits, y_i) + (1 - lam) * CE(logits, y_perm(i))``,
    each cross-entropy a batch mean (GVAlign's ``mixup_criterion``)."""
    logits = logits.float()
    return lam * F.cross_entropy(logits, targets_a) + (1.0 - lam) * F.cross_entropy(logits, targets_b)
