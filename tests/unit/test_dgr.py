"""DGR's formulas against hand computations and a slow per-class transcription of METHOD.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from types import SimpleNamespace

from torch import nn

from cil_core import losses
from cil_core.engine.learner import Step, TaskContext, backward_split
from cil_core.engine.network import LinearHead
from cil_core.methods.dgr import DGR, Options, reweighted_classifier_gradient, task_statistics


def test_task_statistics_match_hand_computation():
    # 3 old classes with 100, 40, 10 images originally; memory keeps 20, 20, 10.
    # 2 new classes with 30 and 6 images.
    class_counts = np.array([100, 40, 10, 30, 6])
    train_counts = np.array([20, 20, 10, 30, 6])
    stats = task_statistics(train_counts=train_counts, class_counts=class_counts, n_old=3, options=Options(), device=torch.device("cpu"))
    n_seen, n_new = 150.0, 36.0
    assert stats.gamma == pytest.approx(math.exp(-n_seen / (n_seen + n_new)))
    assert stats.beta == pytest.approx(0.7 * math.sqrt(n_seen / n_new))
    pi = train_counts / train_counts.sum()
    assert torch.allclose(stats.log_prior, torch.tensor(np.log(pi), dtype=torch.float32))
    # removed images q = (80, 20, 0); p = q/sum -> (0.8, 0.2, 0), then / ||.||_2
    p = np.array([0.8, 0.2, 0.0]) / math.sqrt(0.8**2 + 0.2**2)
    assert torch.allclose(stats.p, torch.tensor(p, dtype=torch.float32))
    q = np.array([80.001, 20.001, 0.001])
    prob = q / q.sum()
    rho = -(prob * np.log(prob)).sum() / math.log(3)
    assert float(stats.rho_h) == pytest.approx(rho, rel=1e-5)


def test_attenuation_switch_gives_gamma_one():
    stats = task_statistics(
        train_counts=np.array([5, 5, 9]), class_counts=np.array([50, 5, 9]), n_old=2,
        options=Options(attenuation=False), device=torch.device("cpu"),
    )
    assert stats.gamma == 1.0


def test_nothing_removed_gives_plain_kd_mixture():
    # Every old class has <= memory images: q = 0 -> p = 0, no division by zero.
    stats = task_statistics(
        train_counts=np.array([5, 7, 30]), class_counts=np.array([5, 7, 30]), n_old=2,
        options=Options(), device=torch.device("cpu"),
    )
    assert torch.equal(stats.p, torch.zeros(2))
    assert torch.isfinite(stats.rho_h)


def test_dakd_value_by_hand():
    z = torch.tensor([[1.0, 0.0]])
    s = torch.tensor([[0.0, 1.0]])
    p = torch.tensor([1.0, 0.0])
    rho = torch.tensor(0.25)
    T = 2.0
    # z' = p*z + (1-p)*s = [1, 1]
    target = torch.softmax(s / T, 1)[0]
    log_plain = torch.log_softmax(z / T, 1)[0]
    log_mixed = torch.log(torch.tensor([0.5, 0.5]))
    expected = -(target * (0.25 * log_plain + 0.75 * log_mixed)).sum()
    assert float(losses.dakd_loss(z, s, p, rho, T)) == pytest.approx(float(expected), rel=1e-6)


def test_dakd_gradient_matches_autograd():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(7, 5, generator=g, dtype=torch.float64)
    p = losses.removed_share(torch.tensor([30.0, 0.0, 5.0, 12.0, 1.0], dtype=torch.float64))
    rho = losses.normalised_entropy(torch.tensor([30.0, 0.0, 5.0, 12.0, 1.0], dtype=torch.float64))
    (auto,) = torch.autograd.grad(losses.dakd_loss(z, s, p, rho, 2.0), z)
    closed = losses.dakd_logit_grad(z.detach(), s, p, rho, 2.0)
    assert torch.allclose(auto, closed, atol=1e-12)


def _slow_reference(W, b, feats, y, teacher_old, log_prior, stats_kd, n_old, gamma, accumulated, opts):
    """METHOD.md 2.2-2.5 transcribed literally: one Python iteration per class row.

    The ablation switches of ``opts`` as METHOD.md states them: ``logit_adjust=False`` plain CE,
    ``dakd=False`` Hinton KD, ``intra_phase=False`` alpha_c = 1, ``inter_phase=False``
    r_old = r_new = 1 (``attenuation=False`` is gamma = 1, passed in by the caller)."""
    W = W.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    logits = feats @ W.t() + b
    l_ce = F.cross_entropy(logits + log_prior if opts.logit_adjust else logits, y)
    g_ce_w, g_ce_b = torch.autograd.grad(l_ce, (W, b), retain_graph=True)
    C = W.shape[0]
    phi = [accumulated[c].item() + g_ce_w[c].norm().item() for c in range(C)]
    if n_old == 0:
        alpha = [min(phi) / phi[c] if opts.intra_phase else 1.0 for c in range(C)]
        return (torch.stack([alpha[c] * g_ce_w[c] for c in range(C)]), torch.stack([alpha[c] * g_ce_b[c] for c in range(C)]))
    p, rho, beta = stats_kd
    if opts.dakd:
        l_kd = beta * 4 * losses.dakd_loss(logits[:, :n_old], teacher_old, p, rho, 2.0)
    else:  # Hinton KD at T = 2, written out
        target = torch.softmax(teacher_old / 2.0, 1)
        l_kd = beta * 4 * -(target * torch.log_softmax(logits[:, :n_old] / 2.0, 1)).sum(1).mean()
    g_kd_w, g_kd_b = torch.autograd.grad(l_kd, (W, b))
    old = phi[:n_old]
    new = phi[n_old:]
    if opts.intra_phase:
        alpha = [min(old) / v for v in old] + [min(new) / v for v in new]
    else:
        alpha = [1.0] * C
    m_old, m_new = sum(old) / len(old), sum(new) / len(new)
    r_old = min(1.0, m_new / m_old) if opts.inter_phase else 1.0
    r_new = min(1.0, gamma * m_new / m_old) if opts.inter_phase else 1.0
    w = [alpha[c] * (r_old if c < n_old else r_new) for c in range(C)]
    num = math.sqrt(sum((w[c] * g_ce_w[c].norm().item()) ** 2 for c in range(C)))
    den = math.sqrt(sum(g_kd_w[c].norm().item() ** 2 for c in range(n_old)))
    k = num / den
    rows_w, rows_b = [], []
    for c in range(C):
        if c < n_old:
            rows_w.append(w[c] * g_ce_w[c] + k * g_kd_w[c])
            rows_b.append(w[c] * g_ce_b[c] + k * g_kd_b[c])
        else:
            rows_w.append(w[c] * g_ce_w[c])
            rows_b.append(w[c] * g_ce_b[c])
    return torch.stack(rows_w), torch.stack(rows_b)


@pytest.mark.parametrize("n_old", [0, 4])
def test_replaced_classifier_gradient_matches_per_class_loop(n_old):
    torch.manual_seed(1)
    C, D, B = 9, 6, 16
    W = torch.randn(C, D, dtype=torch.float64)
    b = torch.randn(C, dtype=torch.float64)
    feats = torch.randn(B, D, dtype=torch.float64)
    y = torch.randint(0, C, (B,))
    y[:C] = torch.arange(C)  # every class present
    counts = np.array([50, 40, 30, 20, 10, 9, 8, 7, 6])
    log_prior = torch.log(torch.tensor(counts / counts.sum(), dtype=torch.float64))
    teacher_old = torch.randn(B, max(n_old, 1), dtype=torch.float64)[:, :n_old]
    q = torch.tensor([30.0, 20.0, 10.0, 0.0], dtype=torch.float64)[:n_old]
    p, rho, beta = losses.removed_share(q), losses.normalised_entropy(q), 0.9
    accumulated = torch.rand(C, dtype=torch.float64) * 3  # Phi from earlier steps of the task
    gamma = 0.6
    opts = Options()

    ref_w, ref_b = _slow_reference(W, b, feats, y, teacher_old, log_prior, (p, rho, beta), n_old, gamma, accumulated, opts)

    logits = (feats @ W.t() + b).requires_grad_(True)
    l_ce = F.cross_entropy(logits + log_prior, y)
    (g_ce,) = torch.autograd.grad(l_ce, logits, retain_graph=True)
    g_kd = None
    if n_old:
        l_kd = beta * 4 * losses.dakd_loss(logits[:, :n_old], teacher_old, p, rho, 2.0)
        (g_kd,) = torch.autograd.grad(l_kd, logits)
    got_w, got_b, new_acc = reweighted_classifier_gradient(
        grad_ce=g_ce, grad_kd=g_kd, features=feats, accumulated=accumulated.float(), n_old=n_old, gamma=gamma, options=opts
    )
    assert torch.allclose(got_w.double(), ref_w, rtol=1e-4, atol=1e-6)
    assert torch.allclose(got_b.double(), ref_b, rtol=1e-4, atol=1e-6)
    # Phi grew by exactly this step's per-class CE gradient norms.
    g_ce_w = g_ce.t() @ feats
    assert torch.allclose(new_acc.double(), accumulated + g_ce_w.norm(dim=1), rtol=1e-5)


def test_ablations_switch_off_their_factor():
    torch.manual_seed(2)
    C, D, B, n_old = 6, 4, 12, 3
    feats = torch.randn(B, D)
    g_ce = torch.randn(B, C)
    g_kd = torch.cat([torch.randn(B, n_old), torch.zeros(B, C - n_old)], 1)
    acc = torch.rand(C) + 0.5
    plain_w = g_ce.t() @ feats
    # No intra, no inter: CE rows unchanged for new classes.
    w, _, _ = reweighted_classifier_gradient(
        grad_ce=g_ce, grad_kd=g_kd, features=feats, accumulated=acc, n_old=n_old, gamma=0.5,
        options=Options(intra_phase=False, inter_phase=False),
    )
    assert torch.allclose(w[n_old:], plain_w[n_old:], atol=1e-6)
    # Intra only: new rows scaled by min(Phi_new)/Phi_c, the smallest-Phi row keeps its size.
    w, _, phi = reweighted_classifier_gradient(
        grad_ce=g_ce, grad_kd=None, features=feats, accumulated=acc, n_old=n_old, gamma=0.5,
        options=Options(inter_phase=False),
    )
    alpha_new = phi[n_old:].min() / phi[n_old:]
    assert torch.allclose(w[n_old:], alpha_new[:, None] * plain_w[n_old:], atol=1e-6)


def test_zero_kd_gradient_gives_k_zero():
    feats = torch.randn(8, 4)
    g_ce = torch.randn(8, 5)
    w, b, _ = reweighted_classifier_gradient(
        grad_ce=g_ce, grad_kd=torch.zeros(8, 5), features=feats, accumulated=torch.ones(5), n_old=2, gamma=1.0,
        options=Options(),
    )
    assert torch.isfinite(w).all() and torch.isfinite(b).all()


SWITCHES = ["dakd", "logit_adjust", "intra_phase", "inter_phase", "attenuation"]


def _engine_step(opts: Options, seed: int = 3):
    """DGR's real hooks on a real linear head through the engine's ``backward_split``.

    Task 1 of a run: 4 old classes (memory capped at 20 images), 5 new ones; Phi already
    holds earlier steps' norms. Returns the head, the backbone, the inputs the reference needs."""
    torch.manual_seed(seed)
    C, D, B, n_old = 9, 6, 18, 4
    class_counts = np.array([50, 40, 30, 20, 10, 9, 8, 7, 6])
    train_counts = np.minimum(class_counts, [20, 20, 20, 20, 1000, 1000, 1000, 1000, 1000])
    ctx = TaskContext(
        task=1, num_tasks=2, n_old=n_old, n_seen=C, new_indices=np.zeros(0, dtype=np.int64),
        memory_indices=np.zeros(0, dtype=np.int64), class_counts=class_counts, train_counts=train_counts,
    )
    backbone = nn.Linear(5, D)
    head = LinearHead(D)
    head.grow(C)
    method = DGR(learner=SimpleNamespace(device=torch.device("cpu")), options=opts)
    method.before_task(ctx)
    method.accumulated = torch.rand(C) * 3  # Phi from earlier steps of the task
    phi_before = method.accumulated.clone()
    x = torch.randn(B, 5)
    y = torch.cat([torch.arange(C), torch.randint(0, C, (B - C,))])
    features = backbone(x)
    out = {"features": features, "logits": head(features)}
    teacher = {"logits": torch.randn(B, C)}
    step = Step(x=x, y=y, out=out, teacher_out=teacher, ctx=ctx, phase=None)
    terms = method.loss_terms(step)
    backward_split(head, step, terms, method.classifier_gradient)
    return SimpleNamespace(
        method=method, head=head, backbone=backbone, x=x, y=y, features=features.detach(),
        terms={k: v.detach() for k, v in terms.items()},
        teacher_old=teacher["logits"][:, :n_old], class_counts=class_counts, train_counts=train_counts,
        phi_before=phi_before, n_old=n_old,
    )


def _reference_of(run, opts: Options):
    """The transcription's classifier gradient for ``run``'s batch, every statistic by hand."""
    n_old, counts, kept = run.n_old, run.class_counts.astype(float), run.train_counts.astype(float)
    n_seen_images, n_new_images = counts[:n_old].sum(), counts[n_old:].sum()
    gamma = math.exp(-n_seen_images / (n_seen_images + n_new_images)) if opts.attenuation else 1.0
    beta = 0.7 * math.sqrt(n_seen_images / n_new_images)
    removed = torch.tensor(counts[:n_old] - kept[:n_old], dtype=torch.float32)
    log_prior = torch.log(torch.tensor(kept / kept.sum(), dtype=torch.float32))
    stats = (losses.removed_share(removed), losses.normalised_entropy(removed), beta)
    return _slow_reference(
        run.head.weight.detach(), run.head.bias.detach(), run.features, run.y, run.teacher_old, log_prior,
        stats, n_old, gamma, run.phi_before, opts,
    )


@pytest.mark.parametrize("switch", [None, *SWITCHES])
def test_engine_hooks_match_the_transcription_with_each_switch(switch):
    """loss_terms -> backward_split -> classifier_gradient, as the Learner calls them, equal the
    per-class transcription; each ablation switch changes exactly its own factor (the reference
    with that factor off matches, the default reference does not)."""
    opts = Options() if switch is None else Options(**{switch: False})
    run = _engine_step(opts)
    ref_w, ref_b = _reference_of(run, opts)
    assert torch.allclose(run.head.weight.grad, ref_w, rtol=1e-4, atol=1e-6)
    assert torch.allclose(run.head.bias.grad, ref_b, rtol=1e-4, atol=1e-6)
    if switch is not None:
        default_w, _ = _reference_of(run, Options())
        assert not torch.allclose(ref_w, default_w, rtol=1e-3, atol=1e-5), f"{switch}=false changed nothing"
    # The backbone gets the gradient of the plain sum of the terms (backward_split's claim).
    features = run.backbone(run.x)
    logits = run.head(features)
    step = Step(x=run.x, y=run.y, out={"features": features, "logits": logits},
                teacher_out={"logits": torch.cat([run.teacher_old, torch.zeros(len(run.x), 5)], 1)},
                ctx=SimpleNamespace(n_old=run.n_old, n_seen=9), phase=None)
    expected = torch.autograd.grad(sum(run.method.loss_terms(step).values()), list(run.backbone.parameters()))
    for param, grad in zip(run.backbone.parameters(), expected):
        assert torch.allclose(param.grad, grad, rtol=1e-5, atol=1e-7)
    # What the method keeps and what it assigned carry no autograd graph.
    for kept in (run.method.accumulated, run.head.weight.grad, run.head.bias.grad):
        assert kept.grad_fn is None and not kept.requires_grad


def test_switches_change_the_terms_they_name():
    """dakd=false: the KD term is plain Hinton KD; logit_adjust=false: the CE term loses the prior;
    attenuation=false: gamma = 1; the other switches leave the loss terms alone."""
    default = _engine_step(Options())
    logits = default.head(default.features).detach()
    stats = default.method.stats
    kd_plain = stats.beta * 4 * -(torch.softmax(default.teacher_old / 2, 1) * torch.log_softmax(logits[:, :4] / 2, 1)).sum(1).mean()
    assert float(default.terms["ce"]) == pytest.approx(float(F.cross_entropy(logits + stats.log_prior, default.y)), rel=1e-6)
    assert float(default.terms["kd"]) != pytest.approx(float(kd_plain), rel=1e-3)
    plain_kd = _engine_step(Options(dakd=False))
    assert float(plain_kd.terms["kd"]) == pytest.approx(float(kd_plain), rel=1e-6)
    assert float(plain_kd.terms["ce"]) == pytest.approx(float(default.terms["ce"]), rel=1e-6)
    no_prior = _engine_step(Options(logit_adjust=False))
    assert float(no_prior.terms["ce"]) == pytest.approx(float(F.cross_entropy(logits, default.y)), rel=1e-6)
    assert float(no_prior.terms["kd"]) == pytest.approx(float(default.terms["kd"]), rel=1e-6)
    assert _engine_step(Options(attenuation=False)).method.stats.gamma == 1.0 and stats.gamma < 1.0
    for switch in ("intra_phase", "inter_phase", "attenuation"):
        terms = _engine_step(Options(**{switch: False})).terms
        assert {k: float(v) for k, v in terms.items()} == {k: float(v) for k, v in default.terms.items()}
