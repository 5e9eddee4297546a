"""PODNet: POD-spatial, POD-flat, the NCA loss and the LSC head, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from cil_core import losses
from cil_core.engine.heads import LocalSimilarityHead
from cil_core.methods.podnet import Options, PODNet


def test_pod_spatial_by_hand():
    # one stage, one channel, 2x2 maps
    old = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    new = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    # squared maps; width-pooled (sum over columns, per row): old (1, 0), new (1, 0);
    # height-pooled (sum over rows, per column): old (1, 0), new (0, 1).
    # vectors old (1, 0, 1, 0)/sqrt2, new (1, 0, 0, 1)/sqrt2: distance sqrt(2)/sqrt(2) = 1
    assert float(losses.pod_spatial_loss([old], [new])) == pytest.approx(1.0, rel=1e-6)
    # the activations' sign does not matter (squared), scale does not either (normalised)
    assert float(losses.pod_spatial_loss([old], [-3 * old])) == pytest.approx(0.0, abs=1e-7)
    # averaged over stages
    assert float(losses.pod_spatial_loss([old, old], [new, old])) == pytest.approx(0.5, rel=1e-6)


def test_pod_spatial_pools_each_axis_separately():
    a = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]]]])  # squared: 4, 0 / 0, 1
    b = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # squared: 1, 0 / 0, 4
    va = torch.tensor([4.0, 1.0, 4.0, 1.0]) / math.sqrt(34)
    vb = torch.tensor([1.0, 4.0, 1.0, 4.0]) / math.sqrt(34)
    assert float(losses.pod_spatial_loss([a], [b])) == pytest.approx(float((va - vb).norm()), rel=1e-6)


def test_nca_by_hand():
    sims = torch.tensor([[0.5, 0.2, -0.1]])
    y = torch.tensor([0])
    # margin on the true class: s = (-0.1, 0.2, -0.1); row max 0.2 -> (-0.3, 0, -0.3);
    # denominator: the true class's slot becomes 0 -> log(e^0 + e^0 + e^-0.3)
    expected = -(-0.3 - math.log(2 + math.exp(-0.3)))
    assert float(losses.nca_loss(sims, y, 1.0, 0.6)) == pytest.approx(expected, rel=1e-6)
    # the scale multiplies the margin-shifted similarities
    s = [2 * (0.5 - 0.6), 2 * 0.2, 2 * -0.1]
    m = max(s)
    expected2 = -((s[0] - m) - math.log(1 + math.exp(s[1] - m) + math.exp(s[2] - m)))
    assert float(losses.nca_loss(sims, y, 2.0, 0.6)) == pytest.approx(expected2, rel=1e-6)
    # without excluding the positive it is cross-entropy on the shifted similarities
    ce = torch.nn.functional.cross_entropy(torch.tensor([[-0.1, 0.2, -0.1]]), y)
    assert float(losses.nca_loss(sims, y, 1.0, 0.6, exclude_positive=False)) == pytest.approx(float(ce), rel=1e-6)


class Net(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head
        self.backbone = torch.nn.Linear(2, 2)


def test_loss_terms_weights_by_hand(make_learner, make_step, task_context):
    head = LocalSimilarityHead(2, proxies=3)
    head.grow(2)
    head.grow(2)
    method = PODNet(learner=make_learner(model=Net(head)), options=Options(proxies=3))
    assert isinstance(method.make_head(8), LocalSimilarityHead) and method.make_head(8).proxies == 3
    method.before_task(task_context(1, 2, 4))
    assert head.weight_old.requires_grad is False
    feats = torch.tensor([[1.0, 0.5], [0.2, 1.0]])
    old_maps = [torch.randn(2, 3, 4, 4)]
    new_maps = [torch.randn(2, 3, 4, 4)]
    with torch.no_grad():
        logits = head(feats)
    step = make_step(logits, [0, 3], n_old=2, teacher_logits=torch.zeros(2, 2), features=feats,
                     teacher_features=[[1.0, 0.0], [0.0, 1.0]])
    step.out["maps"], step.teacher_out["maps"] = new_maps, old_maps
    terms = {k: v.detach() for k, v in method.loss_terms(step).items()}
    factor = math.sqrt(4 / 2)  # sqrt(n_seen / n_new)
    assert float(terms["pod_spatial"]) == pytest.approx(3.0 * factor * float(losses.pod_spatial_loss(old_maps, new_maps)), rel=1e-6)
    flat = float(losses.cosine_embedding_distance(feats, torch.tensor([[1.0, 0.0], [0.0, 1.0]])))
    assert float(terms["pod_flat"]) == pytest.approx(1.0 * factor * flat, rel=1e-6)
    # the default: softmax cross-entropy on the scaled similarities (what the LT-CIL code's nca
    # call computes); "nca": the paper's loss
    assert float(terms["ce"]) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3]))), rel=1e-6)
    paper = PODNet(learner=make_learner(model=Net(head)), options=Options(proxies=3, classifier_loss="nca"))
    paper.before_task(task_context(1, 2, 4))
    nca = float(paper.loss_terms(step)["nca"])
    assert nca == pytest.approx(float(losses.nca_loss(logits, torch.tensor([0, 3]), 1.0, 0.6)), rel=1e-6)
