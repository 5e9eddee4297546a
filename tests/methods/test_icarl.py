"""iCaRL: its two losses (the reference code's and the paper's) and the nearest-mean-of-exemplars
classifier, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cil_core import losses
from cil_core.methods.icarl import ICaRL, Options


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _bce(z, t):
    return -(t * math.log(_sig(z)) + (1 - t) * math.log(1 - _sig(z)))


def test_bce_uses_teacher_sigmoids_for_old_classes_by_hand(make_step):
    logits = [[0.5, -1.0, 2.0]]  # classes 0, 1 old; 2 new
    teacher = [[3.0, -2.0]]
    step = make_step(logits, [2], n_old=2, teacher_logits=teacher)
    terms = ICaRL(learner=None, options=Options(loss="paper")).loss_terms(step)
    targets = [_sig(3.0), _sig(-2.0), 1.0]  # old: teacher's sigmoid; new: one-hot
    expected = sum(_bce(z, t) for z, t in zip(logits[0], targets))  # summed over classes
    assert float(terms["bce"]) == pytest.approx(expected, rel=1e-5)


def test_bce_first_task_is_one_hot(make_step):
    step = make_step([[0.5, -1.0]], [0], n_old=0)
    terms = ICaRL(learner=None, options=Options(loss="paper")).loss_terms(step)
    assert float(terms["bce"]) == pytest.approx(_bce(0.5, 1.0) + _bce(-1.0, 0.0), rel=1e-5)


def _bce_prob(p, q):
    return -(q * math.log(p) + (1 - q) * math.log(1 - p))


def test_reference_loss_by_hand(make_step):
    """LT-CIL's criterion: softmax CE over all classes + lamb x sum over old classes of
    BCE(sigmoid(student), sigmoid(teacher))."""
    logits = [[0.5, -1.0, 2.0]]  # classes 0, 1 old; 2 new
    step = make_step(logits, [2], n_old=2, teacher_logits=[[3.0, -2.0]])
    terms = ICaRL(learner=None, options=Options(lamb=0.5)).loss_terms(step)
    e = [math.exp(v) for v in logits[0]]
    ce = -math.log(e[2] / sum(e))
    kd = _bce_prob(_sig(0.5), _sig(3.0)) + _bce_prob(_sig(-1.0), _sig(-2.0))
    assert float(terms["ce_bce"]) == pytest.approx(ce + 0.5 * kd, rel=1e-5)
    first = ICaRL(learner=None, options=Options()).loss_terms(make_step(logits, [2], n_old=0))
    assert float(first["ce_bce"]) == pytest.approx(ce, rel=1e-5)  # task 0: plain cross-entropy


def test_class_means_are_renormalised_means_of_normalised_features():
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    means, counts = losses.normalised_class_means(feats, labels, 3)
    s = 1 / math.sqrt(2)
    assert torch.allclose(means[0], torch.tensor([s, s]))  # mean of (1,0) and (0,1), renormalised
    assert torch.allclose(means[1], torch.tensor([0.0, 1.0]))
    assert counts.tolist() == [2, 1, 0]


def test_nme_predicts_the_nearest_class_mean(make_learner):
    method = ICaRL(learner=make_learner(), options=Options())
    method.class_means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    out = {"features": torch.tensor([[10.0, 1.0], [-0.5, 2.0], [-3.0, -0.1]]), "logits": torch.zeros(3, 3)}
    logits = method.eval_logits(out, 3)
    assert logits.argmax(1).tolist() == [0, 1, 2]
    f = np.array([10.0, 1.0]) / np.linalg.norm([10.0, 1.0])
    assert float(logits[0, 1]) == pytest.approx(-np.linalg.norm(f - np.array([0.0, 1.0])), rel=1e-5)
    # the CNN variant reports the network's outputs instead
    assert torch.equal(ICaRL(learner=None, options=Options(classifier="cnn")).eval_logits(out, 3), out["logits"])


def test_exemplar_means_with_flip_average_each_exemplar_with_its_mirror(make_learner):
    plain = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    mirrored = torch.tensor([[0.0, 1.0], [0.0, 5.0]])

    def features(indices, split="train", flip=False):
        return (mirrored if flip else plain), torch.tensor([0, 1])

    learner = make_learner(features=features)
    learner.memory.add({0: np.array([4]), 1: np.array([9])})
    means = ICaRL(learner=learner, options=Options(flip_means=True)).exemplar_means(3)
    s = 1 / math.sqrt(2)
    assert torch.allclose(means[0], torch.tensor([s, s]))
    assert torch.allclose(means[1], torch.tensor([0.0, 1.0]))
    assert torch.isnan(means[2]).all()  # no exemplars: never the nearest mean
    method = ICaRL(learner=learner, options=Options())
    method.class_means = means
    logits = method.eval_logits({"features": torch.tensor([[-1.0, 0.0]]), "logits": torch.zeros(1, 3)}, 3)
    assert logits[0, 2] == float("-inf") and logits.argmax(1).item() != 2


def test_state_round_trip(make_learner):
    a = ICaRL(learner=make_learner(), options=Options())
    a.class_means = torch.randn(4, 3)
    b = ICaRL(learner=make_learner(), options=Options())
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.class_means, b.class_means)
