"""The LT-CIL 2-stage recipe: the class-balanced sampler, label-aware smoothing, what stage 2
learns (the scales and the newest classifier rows), its learning rates and LUCIR-2stage's
skipped stage 1."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cil_core import losses
from cil_core.data.samplers import ClassAwareSampler
from cil_core.engine.learner import Learner
from cil_core.methods.eeil import EEIL
from cil_core.methods.lucir import LUCIR
from cil_core.methods.podnet import PODNet
from cil_core.engine.network import LinearHead
from cil_core.methods.two_stage import EEIL2Stage, LUCIR2Stage, PODNet2Stage, TwoStageMixin, stage2_lr_lambdas
from cil_core.registry import get_method


def test_balanced_sampler_draws_every_class_equally_often():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    stub = SimpleNamespace(train_labels=labels, generator=torch.Generator().manual_seed(0))
    indices = np.arange(1000)
    draws = np.concatenate([Learner._balanced_indices(stub, indices) for _ in range(30)])
    assert len(draws) == 30 * 1000  # same epoch length as the data
    share = np.bincount(labels[draws], minlength=3) / len(draws)
    assert share == pytest.approx([1 / 3] * 3, abs=0.01)
    tail = draws[labels[draws] == 2]
    assert set(tail.tolist()) == set(range(990, 1000))  # within a class: uniform over its images


def test_class_aware_sampler_cycles_classes_four_images_at_a_time():
    """LT-CIL's ClassAwareSampler: classes in shuffled passes (each pass visits every class
    once), 4 images per visit, each class's images in shuffled passes of their own; the state
    carries over between epochs."""
    labels = np.array([0] * 8 + [1] * 3 + [2] * 1)  # 12 images: 3 whole visits per epoch
    indices = np.arange(100, 112)
    sampler = ClassAwareSampler(indices, labels, torch.Generator().manual_seed(0))
    draws = np.concatenate([sampler.epoch() for _ in range(6)])
    epoch = sampler.epoch()
    assert len(epoch) == len(indices)
    label_of = dict(zip(indices.tolist(), labels.tolist()))
    seq = [label_of[i] for i in draws.tolist()]
    visits = [seq[k : k + 4] for k in range(0, len(seq), 4)]
    assert len(visits) == 18 and all(len(set(v)) == 1 for v in visits)  # one class per visit
    classes = [v[0] for v in visits]
    for k in range(0, len(classes) - 2, 3):  # every pass of 3 visits covers the 3 classes
        assert sorted(classes[k : k + 3]) == [0, 1, 2]
    per_class = {c: [i for i in draws.tolist() if label_of[i] == c] for c in range(3)}
    for c, n in ((0, 8), (1, 3)):
        seq = per_class[c]
        for k in range(0, len(seq) - n + 1, n):  # each image once per pass over the class
            assert sorted(seq[k : k + n]) == sorted(indices[labels == c].tolist())


def test_label_aware_smoothing_factors_by_hand():
    counts = torch.tensor([500.0, 20.0, 5.0])
    x = torch.tensor([1.0, 15 / 495, 0.0])
    expected = 0.1 + 0.3 * torch.sin(x * math.pi / 2)  # concave (MiSLAS's default)
    assert torch.allclose(losses.label_aware_smoothing(counts, 0.4, 0.1), expected)
    assert losses.label_aware_smoothing(counts, 0.4, 0.1, "linear").tolist() == pytest.approx([0.4, 0.1 + 0.3 * 15 / 495, 0.1])
    assert losses.label_aware_smoothing(torch.tensor([7.0, 7.0]), 0.4, 0.1).tolist() == pytest.approx([0.1, 0.1])


def test_label_aware_smoothing_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    eps = torch.tensor([0.4, 0.2, 0.1])
    logp = torch.log_softmax(logits, 1)[0].tolist()
    expected = (1 - 0.4) * -logp[0] + 0.4 * -sum(logp) / 3
    assert float(losses.label_aware_smoothing_loss(logits, torch.tensor([0]), eps)) == pytest.approx(expected, rel=1e-6)
    # with no smoothing it is cross-entropy
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0]))
    assert float(losses.label_aware_smoothing_loss(logits, torch.tensor([0]), torch.zeros(3))) == pytest.approx(float(ce))


def test_wrappers_subclass_their_base_and_extend_its_options():
    for wrapped, base in ((EEIL2Stage, EEIL), (LUCIR2Stage, LUCIR), (PODNet2Stage, PODNet)):
        assert issubclass(wrapped, base) and issubclass(wrapped, TwoStageMixin)
        assert get_method(f"{base.name}_2stage") is wrapped
        opts = wrapped.Options()
        # LT-CIL: ``self.stage2epoch = 30``; eeil_2stage's loop is ``for e in range(1)``
        assert opts.stage2_epochs == (1 if base is EEIL else 30)
        assert opts.stage2_loss == "ce" and opts.stage2_train_head
        assert opts.smooth_head == 0.4 and opts.smooth_tail == 0.1
        for field in base.Options.__dataclass_fields__:
            assert hasattr(opts, field)


class Net(torch.nn.Module):
    """A linear backbone and a linear head; stage 2 must leave the backbone and the old rows."""

    def __init__(self):
        super().__init__()
        self.backbone_layer = torch.nn.Linear(3, 3)
        self.head = LinearHead(3)
        self.head.grow(2)
        self.head.grow(1)

    def backbone(self, x):
        return {"features": self.backbone_layer(x)}

    def forward(self, x):
        out = self.backbone(x)
        out["logits"] = self.head(out["features"])
        return out


def test_stage_two_learns_scales_and_the_newest_rows(make_learner, task_context):
    net = Net()
    learner = make_learner(model=net)
    method = EEIL2Stage(learner=learner, options=EEIL2Stage.Options(stage2_loss="las", stage2_sampler="iid"))
    ctx = task_context(0, 2, 3, train_counts=[50, 10, 2])
    TwoStageMixin.fit_weight_scaling(method, ctx)
    (phase,) = learner.phases
    assert phase.balanced and phase.schedule == "lambda" and phase.epochs == 1
    assert phase.train_mode is False and phase.use_teacher is False
    assert phase.lr == pytest.approx(0.1)  # both groups start at the run's lr
    head_lr, scale_lr = phase.lr_lambdas
    assert head_lr(0) == scale_lr(0) == 1.0
    (weight, bias), (scale,) = phase.param_groups[0]["params"], phase.param_groups[1]["params"]
    assert torch.equal(weight, net.head.weight[2:]) and torch.equal(bias, net.head.bias[2:])
    assert scale.tolist() == [1.0, 1.0, 1.0]
    x = torch.randn(4, 3)
    with torch.no_grad():
        scale.copy_(torch.tensor([2.0, 0.5, 1.0]))
    out = phase.forward(x)
    assert torch.allclose(out["logits"], net(x)["logits"] * torch.tensor([2.0, 0.5, 1.0]))
    step = SimpleNamespace(out=out, y=torch.tensor([0, 1, 2, 2]))
    loss = sum(phase.loss_terms(step).values())
    grads = torch.autograd.grad(loss, [scale, weight, bias] + list(net.parameters()), allow_unused=True)
    assert all(g is not None for g in grads[:3]) and all(g is None for g in grads[3:])
    smoothing = losses.label_aware_smoothing(torch.tensor([50.0, 10.0, 2.0]), 0.4, 0.1)
    expected = losses.label_aware_smoothing_loss(out["logits"].detach(), step.y, smoothing)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_stage_two_lr_multipliers_follow_the_reference():
    head_lr, scale_lr = stage2_lr_lambdas(30, 0.1)
    for e in range(1, 30):  # adjust_learning_rate_stage_2(e) after epoch e - 1
        cosine = 0.5 * (1 + math.cos(e / 30 * 3.1415926535))
        assert head_lr(e) == pytest.approx(cosine, rel=1e-7) and scale_lr(e) == pytest.approx(cosine / 10, rel=1e-7)


def test_lucir_two_stage_skips_stage_one_on_small_tasks(make_learner, task_context):
    method = LUCIR2Stage(learner=make_learner(), options=LUCIR2Stage.Options())
    ctx = task_context(1, 2, 4)  # 2 new classes
    ctx.new_indices = np.arange(20)  # 10 per class: "len(dataset) > 10 * classes" fails
    assert method.skips_main_phase(ctx)
    ctx.new_indices = np.arange(21)
    assert not method.skips_main_phase(ctx)
    ctx.new_indices = np.arange(20)
    always = LUCIR2Stage(learner=make_learner(), options=LUCIR2Stage.Options(stage1_min_per_class=0))
    assert not always.skips_main_phase(ctx)
    assert not PODNet2Stage(learner=make_learner(), options=PODNet2Stage.Options()).skips_main_phase(ctx)


def test_scales_apply_at_prediction_and_new_classes_start_at_one(make_learner):
    method = LUCIR2Stage(learner=make_learner(), options=LUCIR2Stage.Options())
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(method.eval_logits({"logits": logits}, 4), logits)
    method.lws_scale = torch.tensor([2.0, 0.5])
    assert method.eval_logits({"logits": logits}, 4).tolist() == [[2.0, 1.0, 3.0, 4.0]]
    restored = LUCIR2Stage(learner=make_learner(), options=LUCIR2Stage.Options())
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.lws_scale, method.lws_scale)
    assert "lamb" in method.state_dict()  # the base method's state travels too
