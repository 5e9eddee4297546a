"""EEIL: per-task distillation and the balanced fine-tuning stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cil_core import losses
from cil_core.methods._shared import fraction_milestones, scaled_epochs
from cil_core.methods.eeil import EEIL, Options


def _kd(s, t, T):
    p = torch.softmax(torch.tensor(t) / T, 0)
    return float(-(p * torch.log_softmax(torch.tensor(s) / T, 0)).sum())


def test_one_softmax_per_old_task_by_hand(make_learner, make_step):
    # tasks: classes {0, 1}, {2, 3, 4}, {5}; at task 2 the old blocks are [0, 2) and [2, 5)
    learner = make_learner(task_classes=([0, 1], [2, 3, 4], [5]))
    method = EEIL(learner=learner, options=Options())
    assert method.old_task_bounds(2) == [(0, 2), (2, 5)]
    student = [[1.0, 0.0, 2.0, -1.0, 0.5, 3.0]]
    teacher = [[0.0, 1.0, 1.0, 1.0, -2.0]]
    step = make_step(student, [5], n_old=5, teacher_logits=teacher, task=2)
    terms = method.loss_terms(step)
    expected = _kd([1.0, 0.0], [0.0, 1.0], 2.0) + _kd([2.0, -1.0, 0.5], [1.0, 1.0, -2.0], 2.0)
    assert float(terms["kd"]) == pytest.approx(expected, rel=1e-5)
    # one softmax over all old classes (LwF's form) is a different number
    assert expected != pytest.approx(float(losses.kd_loss(torch.tensor(student)[:, :5], torch.tensor(teacher), 2.0)))


def test_balanced_finetuning_phase(make_learner, task_context):
    model = torch.nn.Linear(2, 4)
    learner = make_learner(model=model)
    learner.memory.add({0: np.array([1, 2]), 1: np.array([3, 4]), 2: np.array([5, 6]), 3: np.array([7, 8])})
    method = EEIL(learner=learner, options=Options())
    method.after_train(task_context(0, 0, 2))
    assert learner.phases == []  # no fine-tuning after the first task
    method.after_train(task_context(1, 2, 4))
    (phase,) = learner.phases
    assert phase.indices.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # the memory: 2 per class, old and new
    assert phase.lr == pytest.approx(0.01)  # "the starting rate is 0.01"
    assert phase.epochs == 6 and phase.milestones == (2, 4)  # 30/40 of the run's 8 epochs, /10 each third


def test_temporary_distillation_on_new_classes(make_learner, make_step):
    learner = make_learner()
    method = EEIL(learner=learner, options=Options())
    before = torch.tensor([[0.0, 0.0, 1.0, -1.0]])
    method._snapshot = lambda x: {"logits": before}
    step = make_step([[0.0, 0.0, 0.0, 2.0]], [3], n_old=2, teacher_logits=[[0.0, 0.0]])
    terms = method.finetune_terms(step)
    assert float(terms["kd_new"]) == pytest.approx(_kd([0.0, 2.0], [1.0, -1.0], 2.0), rel=1e-5)


def test_stage_length_helpers():
    assert scaled_epochs(30, 40, 160) == 120 and scaled_epochs(30, 40, 1) == 1
    assert fraction_milestones(30, (1 / 3, 2 / 3)) == (10, 20)
    assert fraction_milestones(1, (1 / 3, 2 / 3)) == ()
