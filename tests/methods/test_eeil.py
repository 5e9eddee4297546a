"""EEIL: per-task distillation and the balanced fine-tuning stage, by hand (the engine-level
comparison with the reference code is in test_reference_steps.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cil_core.methods._building_blocks import scaled_epochs
from cil_core.methods.eeil import EEIL, Options


def _softmax(v, T):
    e = [math.exp(a / T) for a in v]
    return [a / sum(e) for a in e]


def _bce_kd(s, t, T):
    """FACIL: mean over the layer's classes of BCE(softmax(s/T)_c, softmax(t/T)_c)."""
    p, q = _softmax(s, T), _softmax(t, T)
    return sum(-(qc * math.log(pc) + (1 - qc) * math.log(1 - pc)) for pc, qc in zip(p, q)) / len(p)


def _soft_ce(s, t, T):
    p, q = _softmax(s, T), _softmax(t, T)
    return -sum(qc * math.log(pc) for pc, qc in zip(p, q))


TASKS = ([0, 1, 2], [3, 4], [5])
STUDENT = [[1.0, 0.0, 2.0, -1.0, 0.5, 3.0]]
TEACHER = [[0.0, 1.0, 0.5, 1.0, -2.0]]


def test_main_phase_distils_all_but_the_last_old_layer(make_learner, make_step):
    method = EEIL(learner=make_learner(task_classes=TASKS), options=Options())
    assert method.old_task_bounds(2) == [(0, 3), (3, 5)]
    step = make_step(STUDENT, [5], n_old=5, teacher_logits=TEACHER, task=2)
    kd = float(method.loss_terms(step)["kd"])
    assert kd == pytest.approx(_bce_kd(STUDENT[0][:3], TEACHER[0][:3], 2.0), rel=1e-5)
    # balanced fine-tuning: every old layer
    both = _bce_kd(STUDENT[0][:3], TEACHER[0][:3], 2.0) + _bce_kd(STUDENT[0][3:5], TEACHER[0][3:5], 2.0)
    assert float(method.finetune_terms(step)["kd"]) == pytest.approx(both, rel=1e-5)
    # task 1: no distillation in the main phase
    step1 = make_step([STUDENT[0][:4]], [3], n_old=3, teacher_logits=[TEACHER[0][:3]], task=1)
    assert "kd" not in method.loss_terms(step1)


def test_paper_options(make_learner, make_step):
    opts = Options(distillation="soft_ce", main_kd_last_old_head=True)
    method = EEIL(learner=make_learner(task_classes=TASKS), options=opts)
    step = make_step(STUDENT, [5], n_old=5, teacher_logits=TEACHER, task=2)
    expected = _soft_ce(STUDENT[0][:3], TEACHER[0][:3], 2.0) + _soft_ce(STUDENT[0][3:5], TEACHER[0][3:5], 2.0)
    assert float(method.loss_terms(step)["kd"]) == pytest.approx(expected, rel=1e-5)


def test_balanced_finetuning_phase(make_learner, task_context):
    learner = make_learner(model=torch.nn.Linear(2, 4))
    learner.generator = torch.Generator().manual_seed(0)
    learner.memory.add({0: np.array([1, 2]), 1: np.array([3, 4])})
    method = EEIL(learner=learner, options=Options())
    method.after_main_phase(task_context(0, 0, 2))
    assert learner.phases == []  # no fine-tuning after the first task
    ctx = task_context(1, 2, 4)
    ctx.new_indices = np.arange(10, 20)
    method.after_main_phase(ctx)
    (phase,) = learner.phases
    # every old exemplar + as many random images of the new task (before its exemplars exist)
    assert phase.indices[:4].tolist() == [1, 2, 3, 4]
    assert len(phase.indices) == 8 and set(phase.indices[4:].tolist()) <= set(range(10, 20))
    assert phase.lr == pytest.approx(0.1 * 0.01) and phase.milestones == ()  # constant lr x 0.01
    assert phase.epochs == scaled_epochs(40, 160, 8) == 2  # 40 of 160 epochs, scaled to the run's 8


def test_temporary_distillation_on_new_classes(make_learner, make_step):
    method = EEIL(learner=make_learner(), options=Options(finetune_new_kd=True))
    before = torch.tensor([[0.0, 0.0, 1.0, -1.0]])
    method._snapshot = lambda x: {"logits": before}
    step = make_step([[0.0, 0.0, 0.0, 2.0]], [3], n_old=2, teacher_logits=[[0.0, 0.0]])
    terms = method.finetune_terms(step)
    assert float(terms["kd_new"]) == pytest.approx(_bce_kd([0.0, 2.0], [1.0, -1.0], 2.0), rel=1e-5)
