"""BiC: the bias layer, its balanced validation set, its fit, and the distillation weighting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cil_core import losses
from cil_core.methods.bic import BiC, Options, bias_correct, select_per_class

# Training-split labels of 12 images; the held-out indices of each task.
LABELS = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 0, 1, 2])
VAL = [np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7, 8])]


class Identity(torch.nn.Module):
    """A "network" whose logits are its input: the bias stage then fits on hand-made logits."""

    def forward(self, x):
        return {"logits": x, "features": x}


def _bic(make_learner, **opts):
    """BiC taking its validation images from the hold-out (``val_source=holdout``), 2 per class
    (ceil(0.1 x 20))."""
    learner = make_learner(task_classes=([0, 1], [2, 3]), model=Identity(), train_labels=LABELS, val_indices=VAL)
    learner.config.memory_per_class = 20
    return BiC(learner=learner, options=Options(**{"val_source": "holdout", **opts})), learner


def _start(method, ctx):
    """What the engine calls before a task's main phase."""
    method.train_indices(ctx)
    method.before_task(ctx)


def test_bias_layer_changes_only_what_it_is_given():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    out = bias_correct(logits, torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, -1.0]))
    assert out.tolist() == [[1.0, 2.0, 5.0]]


def test_validation_set_keeps_the_first_k_per_class():
    idx = np.array([10, 11, 12, 13, 14, 15])
    lab = np.array([0, 1, 0, 0, 1, 2])
    assert select_per_class(idx, lab, 2).tolist() == [10, 11, 12, 14, 15]
    assert select_per_class(idx, lab, 0).tolist() == []
    # keep=1: a class never gives away its last image (class 1 keeps one, class 2 its only one)
    assert select_per_class(idx, lab, 2, keep=1).tolist() == [10, 11, 12]


def test_validation_cut_from_the_new_training_data_and_memory_shrinks(make_learner, task_context):
    """The reference (``val_source=train``): ceil(0.1 x 20) = 2 first images of each new class
    leave the task's data; herding keeps 18 per class."""
    learner = make_learner(task_classes=([0, 1], [2, 3]), model=Identity(), train_labels=LABELS, val_indices=VAL)
    learner.config.memory_per_class = 20
    method = BiC(learner=learner, options=Options())
    ctx = task_context(0, 0, 2)
    ctx.new_indices = np.array([0, 1, 2, 3, 4, 9, 10])  # class 0: 0, 1, 2, 9; class 1: 3, 4, 10
    indices = method.train_indices(ctx)
    assert method.val_indices.tolist() == [0, 1, 3, 4]
    assert ctx.new_indices.tolist() == [2, 9, 10] and indices.tolist() == [2, 9, 10]
    assert method.exemplars_per_class() == 18


def test_validation_set_grows_by_k_per_new_class(make_learner, task_context):
    method, _ = _bic(make_learner)
    _start(method, task_context(0, 0, 2))
    assert method.val_indices.tolist() == [0, 1, 3, 4]
    _start(method, task_context(1, 2, 4))
    assert method.val_indices.tolist() == [0, 1, 3, 4, 5, 6, 7]
    assert method.alphas == [1.0, 1.0] and method.betas == [0.0, 0.0]


def test_distillation_weight_and_corrected_logits_by_hand(make_learner, make_step, task_context):
    method, _ = _bic(make_learner)
    _start(method, task_context(0, 0, 2))
    _start(method, task_context(1, 2, 4))
    method.alphas[0], method.betas[0] = 2.0, 0.5  # an earlier task's fitted layer (fixed now)
    method._refresh(4)
    student = torch.tensor([[1.0, 0.0, 2.0, -1.0]])
    teacher = torch.tensor([[0.5, 1.0]])
    terms = method.loss_terms(make_step(student, [3], n_old=2, teacher_logits=teacher))
    s = torch.tensor([[2.5, 0.5, 2.0, -1.0]])  # old classes through alpha=2, beta=0.5
    t = torch.tensor([[1.5, 2.5]])
    lamb = 2 / 4  # n_old / n_seen
    assert float(terms["ce"]) == pytest.approx((1 - lamb) * float(F.cross_entropy(s, torch.tensor([3]))), rel=1e-5)
    assert float(terms["kd"]) == pytest.approx(lamb * float(losses.kd_loss(s[:, :2], t, 2.0)), rel=1e-5)


def _bias_phase(make_learner, task_context, **opts):
    method, learner = _bic(make_learner, **opts)
    _start(method, task_context(0, 0, 2))
    method.after_train(task_context(0, 0, 2))
    assert learner.phases == []  # no bias layer for the first task
    _start(method, task_context(1, 2, 4))
    method.after_train(task_context(1, 2, 4))
    (phase,) = learner.phases
    return method, phase


def test_bias_stage_gradient_by_hand(make_learner, task_context):
    method, phase = _bias_phase(make_learner, task_context)
    assert phase.indices.tolist() == [0, 1, 3, 4, 5, 6, 7]  # balanced: <= 2 per class, old and new
    assert phase.train_mode is False and phase.use_teacher is False and phase.weight_decay == 0.0
    alpha, beta = phase.param_groups[0]["params"]
    x = torch.tensor([[1.0, 0.0, 2.0, 1.0]])  # old: classes 0, 1; new: 2, 3
    step = type("S", (), {})()
    step.out, step.y = phase.forward(x), torch.tensor([0])
    loss = sum(phase.loss_terms(step).values())
    g_alpha, g_beta = torch.autograd.grad(loss, [alpha, beta])
    p = torch.softmax(x[0], 0).tolist()
    # dCE/dq_c = p_c - y_c; q_c = alpha * z_c + beta for the new classes only
    assert float(g_alpha) == pytest.approx(p[2] * 2.0 + p[3] * 1.0, rel=1e-5)
    assert float(g_beta) == pytest.approx(p[2] + p[3], rel=1e-5)  # + 0.1 * beta = 0 at beta = 0


def test_bias_stage_fit_removes_the_bias_toward_new_classes(make_learner, task_context):
    method, phase = _bias_phase(make_learner, task_context, beta_l2=0.0)
    alpha, beta = phase.param_groups[0]["params"]
    # balanced data whose new-class logits are inflated: old images score their class at 1.0
    # but the new class 2 at 1.5; new images score their class at 2.5.
    x = torch.tensor([[1.0, -5.0, 1.5, -5.0]] * 8 + [[0.0, -5.0, 2.5, -5.0]] * 8)
    y = torch.tensor([0] * 8 + [2] * 8)
    optimizer = torch.optim.SGD(phase.param_groups, lr=0.5, momentum=0.9)
    step = type("S", (), {})()
    for _ in range(300):
        step.out, step.y = phase.forward(x), y
        loss = sum(phase.loss_terms(step).values())
        alpha.grad, beta.grad = torch.autograd.grad(loss, [alpha, beta])
        optimizer.step()
    corrected = phase.forward(x)["logits"]
    assert (corrected.argmax(1) == y).all()
    assert float(beta.detach()) < 0
    # the old classes' logits were never touched
    assert torch.equal(corrected[:, :2], x[:, :2])
    method.alphas[1], method.betas[1] = float(alpha.detach()), float(beta.detach())
    method._refresh(4)
    assert (method.eval_logits({"logits": x}, 4).argmax(1) == y).all()


def test_state_round_trip(make_learner, task_context):
    a, _ = _bic(make_learner)
    a.before_task(task_context(0, 0, 2))
    a.alphas[0], a.betas[0] = 0.7, -0.2
    b, _ = _bic(make_learner)
    b.load_state_dict(a.state_dict())
    assert b.alphas == [0.7] and b.betas == [-0.2] and b.val_indices.tolist() == a.val_indices.tolist()
    assert math.isclose(float(b.eval_logits({"logits": torch.ones(1, 2)}, 2)[0, 0]), 0.5)
