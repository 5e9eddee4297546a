"""LUCIR: cosine normalisation, the less-forget constraint, margin ranking, adaptive lambda."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cil_core import losses
from cil_core.engine.heads import CosineHead
from cil_core.methods.lucir import LUCIR, Options, adaptive_lambda


def test_margin_ranking_by_hand():
    # 2 old classes, 3 new; K = 2, m = 0.5
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.7, -0.2],  # old sample (y=0): gt 0.9 vs new 0.7, 0.5
            [0.0, 0.2, 0.6, 0.1, 0.3],  # old sample (y=1): gt 0.2 vs new 0.6, 0.3
            [0.0, 0.0, 0.9, 0.0, 0.0],  # new sample: no ranking term
        ]
    )
    y = torch.tensor([0, 1, 2])
    pairs = [max(0, 0.5 - 0.9 + 0.7), max(0, 0.5 - 0.9 + 0.5), max(0, 0.5 - 0.2 + 0.6), max(0, 0.5 - 0.2 + 0.3)]
    loss = losses.margin_ranking_loss(scores, y, n_old=2, k=2, margin=0.5)
    assert float(loss) == pytest.approx(sum(pairs) / 4, rel=1e-6)
    # same as torch's MarginRankingLoss on the pairs (the official code's form)
    gt = torch.tensor([0.9, 0.9, 0.2, 0.2])
    neg = torch.tensor([0.7, 0.5, 0.6, 0.3])
    assert float(loss) == pytest.approx(float(F.margin_ranking_loss(gt, neg, torch.ones(4), margin=0.5)), rel=1e-6)


def test_margin_ranking_is_zero_without_old_samples():
    scores = torch.randn(3, 5)
    assert float(losses.margin_ranking_loss(scores, torch.tensor([2, 3, 4]), n_old=2, k=2, margin=0.5)) == 0.0


def test_less_forget_and_adaptive_lambda_by_hand():
    f = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    g = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    assert float(losses.cosine_embedding_distance(f, g)) == pytest.approx((1.0 + 0.0) / 2)
    assert adaptive_lambda(5.0, 50, 10) == pytest.approx(5.0 * math.sqrt(5.0))
    assert adaptive_lambda(5.0, 50, 10, adaptive=False) == 5.0


class Net(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head
        self.backbone = torch.nn.Linear(2, 2)


def test_loss_terms_and_frozen_old_rows(make_learner, make_step, task_context):
    head = CosineHead(2)
    head.grow(2)
    head.grow(2)
    learner = make_learner(model=Net(head))
    method = LUCIR(learner=learner, options=Options())
    assert method.base_lambda == 5.0  # CIFAR-like data set
    assert method.backbone_kwargs() == {"last_relu": False}
    method.before_task(task_context(1, 2, 4))
    assert head.weight_old.requires_grad is False  # less-forget freezes the old classes' weights
    params = {id(p) for g in method.optimizer_params(None) for p in g["params"]}
    assert id(head.weight_new) in params and id(head.sigma) in params and id(head.weight_old) not in params
    assert method.lamb == pytest.approx(5.0 * math.sqrt(2 / 2))
    feats = torch.tensor([[1.0, 0.5], [0.2, 1.0]])
    step = make_step(head(feats).detach(), [0, 3], n_old=2, teacher_logits=torch.zeros(2, 2), features=feats,
                     teacher_features=[[1.0, 0.0], [0.0, 1.0]])
    terms = {k: v.detach() for k, v in method.loss_terms(step).items()}
    assert set(terms) == {"ce", "less_forget", "margin_ranking"}
    expected_lf = method.lamb * float(losses.cosine_embedding_distance(feats, torch.tensor([[1.0, 0.0], [0.0, 1.0]])))
    assert float(terms["less_forget"]) == pytest.approx(expected_lf, rel=1e-6)
    expected_mr = float(losses.margin_ranking_loss(head.similarity(feats).detach(), torch.tensor([0, 3]), 2, 2, 0.5))
    assert float(terms["margin_ranking"]) == pytest.approx(expected_mr, rel=1e-6)


def test_imprinting_sets_new_rows_to_scaled_class_means(make_learner, task_context):
    head = CosineHead(2)
    head.grow(1)
    with torch.no_grad():
        head.weight_new.copy_(torch.tensor([[0.0, 3.0]]))
    head.grow(2)

    def features(indices, split="train", flip=False):
        return torch.tensor([[2.0, 0.0], [4.0, 0.0], [1.0, 1.0]]), torch.tensor([1, 1, 2])

    method = LUCIR(learner=make_learner(model=Net(head), features=features), options=Options(imprint=True))
    method.before_task(task_context(1, 1, 3))
    s = 3 / math.sqrt(2)
    assert head.weight_new.detach().tolist() == [pytest.approx([3.0, 0.0]), pytest.approx([s, s])]


def test_class_balanced_finetuning_trains_only_the_classifier(make_learner, task_context):
    head = CosineHead(2)
    head.grow(2)
    head.grow(2)
    net = Net(head)
    learner = make_learner(model=net)
    learner.memory.add({0: [1], 1: [2], 2: [3], 3: [4]})
    LUCIR(learner=learner, options=Options()).after_train(task_context(1, 2, 4))
    assert learner.phases == []  # off by default, as in the LT-CIL benchmark
    method = LUCIR(learner=learner, options=Options(cbf_epochs=20))
    method.before_task(task_context(1, 2, 4))
    method.after_train(task_context(1, 2, 4))
    (phase,) = learner.phases
    assert phase.indices.tolist() == [1, 2, 3, 4] and phase.lr == 0.01 and phase.milestones == (10,)
    assert phase.train_mode is False
    assert [id(p) for p in phase.param_groups[0]["params"]] == [id(head.weight_old), id(head.weight_new)]
    assert head.weight_old.requires_grad is False  # frozen again for the next task's main phase
