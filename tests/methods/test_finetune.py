"""Fine-tuning with exemplars: plain cross-entropy over the seen classes, nothing else."""

from __future__ import annotations

import math

import pytest

from cil_core.methods.finetune import Finetune


def test_plain_cross_entropy_by_hand(make_step):
    step = make_step([[1.0, 0.0, 2.0]], [1], n_old=2, teacher_logits=[[5.0, -5.0]])
    terms = Finetune(learner=None, options=None).loss_terms(step)
    assert set(terms) == {"ce"}  # no distillation even with a teacher around
    expected = -math.log(math.exp(0.0) / (math.exp(1.0) + 1.0 + math.exp(2.0)))
    assert float(terms["ce"]) == pytest.approx(expected, rel=1e-5)
    assert Finetune.uses_memory and not Finetune.needs_teacher
