"""LwF's distillation term against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cil_core import losses
from cil_core.methods.lwf import LwF, Options


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_kd_term_by_hand(make_step):
    # two old classes, one new; T = 2
    student = [[1.0, 0.0, 5.0]]
    teacher = [[0.0, 1.0]]
    step = make_step(student, [2], n_old=2, teacher_logits=teacher)
    terms = LwF(learner=None, options=Options(lamb=0.5)).loss_terms(step)
    p = _softmax([0.0, 0.5])  # teacher / T
    q = _softmax([0.5, 0.0])  # student's OLD logits / T: the new class's 5.0 takes no part
    eps = 1e-5  # FACIL's cross_entropy smooths the student's distribution: (q + eps/C) / (1 + eps)
    kd = -sum(pi * math.log((qi + eps / 2) / (1 + eps)) for pi, qi in zip(p, q))
    assert float(terms["kd"]) == pytest.approx(0.5 * kd, rel=1e-6)
    ce = -math.log(_softmax([1.0, 0.0, 5.0])[2])
    assert float(terms["ce"]) == pytest.approx(ce, rel=1e-5)


def test_kd_is_zero_when_student_matches_teacher_up_to_a_shift():
    s = torch.tensor([[2.0, -1.0, 0.5]])
    kd_same = losses.kd_loss(s, s + 3.0, 2.0)
    entropy = -(torch.softmax(s / 2, 1) * torch.log_softmax(s / 2, 1)).sum()
    assert float(kd_same) == pytest.approx(float(entropy), rel=1e-6)  # the KD minimum is the entropy


def test_first_task_is_plain_cross_entropy(make_step):
    step = make_step([[1.0, 2.0]], [0], n_old=0)
    assert set(LwF(learner=None, options=Options()).loss_terms(step)) == {"ce"}


def test_exemplar_free_variant_trains_on_new_data_only(make_learner, task_context):
    ctx = task_context(1, 2, 4)
    ctx.memory_indices = np.array([7, 8])
    assert LwF(learner=make_learner(), options=Options(exemplars=False)).train_indices(ctx).tolist() == [0, 1, 2]
    assert LwF(learner=make_learner(), options=Options()).train_indices(ctx).tolist() == [0, 1, 2, 7, 8]
