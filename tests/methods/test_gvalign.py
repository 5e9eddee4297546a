"""GVAlign on LUCIR and PODNet: the global-variance statistic, the prototypes, the pseudo-feature
sampler, the mixup term and where each base loss sees the mixed half, and the alignment stage."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cil_core import losses
from cil_core.config import build_config, coerce_option, resolve_config
from cil_core.engine.heads import CosineHead, LocalSimilarityHead
from cil_core.engine.learner import Step
from cil_core.errors import ConfigError
from cil_core.methods.gvalign import (
    GVAlignMixin,
    LUCIRGVAlign,
    PODNetGVAlign,
    class_prototypes,
    gaussian_factor,
    global_covariance,
    sample_pseudo_features,
)
from cil_core.methods.lucir import LUCIR
from cil_core.methods.podnet import PODNet
from cil_core.registry import get_method


# -- the statistics ---------------------------------------------------------------------------
def test_global_covariance_by_hand():
    # class 0 (the head, 2 images): normalised rows (1, 0) and (0, 1); mean (.5, .5);
    # deviations +-(.5, -.5); divisor n - 1 = 1
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    cov, head = global_covariance(feats, torch.tensor([0, 0, 1]), 2)
    assert head == 0
    assert cov.tolist() == [[pytest.approx(0.5), pytest.approx(-0.5)], [pytest.approx(-0.5), pytest.approx(0.5)]]


def test_global_covariance_against_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 4)).astype(np.float32)
    labels = np.array([0] * 5 + [1] * 10 + [2] * 8)
    cov, head = global_covariance(torch.from_numpy(feats), torch.from_numpy(labels), 3)
    rows = feats[labels == 1] / np.linalg.norm(feats[labels == 1], axis=1, keepdims=True)
    assert head == 1  # the class with the most images
    np.testing.assert_allclose(cov.numpy(), np.cov(rows.T), atol=1e-6)  # np.cov: ddof 1
    # a tie goes to the first class (torch.argmax); one image gives zeros, not NaN
    _, tied = global_covariance(torch.from_numpy(feats[:12]), torch.tensor([2] * 6 + [1] * 6), 3)
    assert tied == 1
    single, _ = global_covariance(torch.ones(1, 4), torch.tensor([0]), 1)
    assert torch.equal(single, torch.zeros(4, 4))


def test_prototypes_are_means_of_normalised_features():
    feats = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0]])
    protos, counts = class_prototypes(feats, torch.tensor([0, 0, 1]), 3)
    # class 0: mean of (.6, .8) and (0, 1), not re-normalised
    assert protos.tolist() == [pytest.approx([0.3, 0.9]), pytest.approx([1.0, 0.0]), [0.0, 0.0]]
    assert counts.tolist() == [2, 1, 0]


# -- the sampler --------------------------------------------------------------------------------
def test_pseudo_features_have_the_prototype_mean_and_the_global_covariance():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32)) * 0.2
    cov = a @ a.t()
    factor = gaussian_factor(cov)
    assert torch.allclose(factor @ factor.t(), cov, atol=1e-6)
    protos = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.5, 0.0], [0.2, 0.2, 0.2, 0.2]])
    n = 20000
    draws = sample_pseudo_features(protos, factor, n, torch.Generator().manual_seed(0))
    assert draws.shape == (3 * n, 4)
    per_class = draws.view(3, n, 4).double()  # class after class
    sd = cov.diagonal().max().sqrt().item()
    for c in range(3):
        mean = per_class[c].mean(0)
        assert torch.allclose(mean.float(), protos[c], atol=5 * sd / math.sqrt(n))
        centred = per_class[c] - mean
        empirical = centred.t() @ centred / (n - 1)
        assert torch.allclose(empirical.float(), cov, atol=5 * sd**2 * math.sqrt(2 / n))
    again = sample_pseudo_features(protos, factor, n, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # the run's generator makes it reproducible


def test_singular_global_covariance_still_samples_on_its_support():
    # fewer head-class images than dimensions: rank 1, along v
    v = torch.tensor([1.0, 2.0, 0.0]) / math.sqrt(5)
    cov = 0.04 * torch.outer(v, v)
    factor = gaussian_factor(cov)
    draws = sample_pseudo_features(torch.zeros(1, 3), factor, 5000, torch.Generator().manual_seed(2))
    along = draws @ v
    off = draws - along[:, None] * v
    assert off.abs().max() < 1e-5  # nothing off the support
    assert float(along.var()) == pytest.approx(0.04, rel=0.1)


# -- stage 1: the mixup term --------------------------------------------------------------------
def test_mixup_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    y_a, y_b, lam = torch.tensor([0, 1]), torch.tensor([2, 0]), 0.3

    def nll(row, c):
        return -(row[c] - math.log(sum(math.exp(v) for v in row)))

    rows = logits.tolist()
    expected = lam * (nll(rows[0], 0) + nll(rows[1], 1)) / 2 + (1 - lam) * (nll(rows[0], 2) + nll(rows[1], 0)) / 2
    assert float(losses.mixup_cross_entropy(logits, y_a, y_b, lam)) == pytest.approx(expected, rel=1e-6)
    assert float(losses.mixup_cross_entropy(logits, y_a, y_b, 1.0)) == pytest.approx(float(F.cross_entropy(logits, y_a)))


class Net(torch.nn.Module):
    """A linear backbone (features and one 'map' per image) and a cosine head; no BatchNorm, so
    each image's outputs do not depend on the rest of the batch."""

    def __init__(self, head):
        super().__init__()
        self.backbone = torch.nn.Linear(3, 2)
        self.head = head

    def forward(self, x):
        f = self.backbone(x)
        return {"features": f, "logits": self.head(f), "maps": [f[:, :, None, None].expand(-1, -1, 2, 2)]}


def _grown(head, *tasks):
    for n in tasks:
        head.grow(n)
    return head


def _learner(make_learner, net, teacher=None, seed=0):
    learner = make_learner(model=net)
    learner.generator = torch.Generator().manual_seed(seed)
    learner.teacher = teacher
    return learner


def _expected_mix(n, seed, numpy_seed):
    np.random.seed(numpy_seed)
    lam = float(np.random.beta(1.0, 1.0))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return lam, perm


def test_lucir_mixup_forward_and_terms(make_learner, task_context):
    torch.manual_seed(0)
    net = Net(_grown(CosineHead(2), 2, 2))
    teacher = copy.deepcopy(net)
    learner = _learner(make_learner, net, teacher)
    method = LUCIRGVAlign(learner=learner, options=LUCIRGVAlign.Options())
    ctx = task_context(1, 2, 4)
    method.before_task(ctx)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 3, 3])
    lam, perm = _expected_mix(5, 0, 7)
    np.random.seed(7)
    out = method.main_forward(net)(x)
    with torch.no_grad():
        plain, mixed = net(x), net(lam * x + (1 - lam) * x[perm])
    # one row per image for the engine; the mixed half travels beside it
    assert torch.allclose(out["logits"], plain["logits"]) and torch.allclose(out["features"], plain["features"])
    assert out["mixup"]["lam"] == lam and torch.equal(out["mixup"]["perm"], perm)
    assert torch.allclose(out["mixup"]["out"]["logits"], mixed["logits"], atol=1e-6)
    assert "teacher" not in out["mixup"]["out"]  # LUCIR distils the original images only
    teacher_out = teacher(x)
    step = Step(x=x, y=y, out=out, teacher_out=teacher_out, ctx=ctx, phase=None)
    terms = {k: float(v.detach()) for k, v in method.loss_terms(step).items()}
    assert set(terms) == {"ce", "less_forget", "margin_ranking", "mixup"}
    base = LUCIR(learner=learner, options=LUCIR.Options())
    base.before_task(ctx)
    plain_step = Step(x=x, y=y, out=dict(plain), teacher_out=teacher_out, ctx=ctx, phase=None)
    for name, value in base.loss_terms(plain_step).items():
        assert terms[name] == pytest.approx(float(value.detach()), rel=1e-5), name
    expected = lam * F.cross_entropy(mixed["logits"], y) + (1 - lam) * F.cross_entropy(mixed["logits"], y[perm])
    assert terms["mixup"] == pytest.approx(float(expected), rel=1e-5)


def test_podnet_distils_the_mixed_images_too(make_learner, task_context):
    torch.manual_seed(1)
    net = Net(_grown(LocalSimilarityHead(2, proxies=3), 2, 2))
    teacher = copy.deepcopy(net)
    with torch.no_grad():
        teacher.backbone.weight.add_(0.3)
    learner = _learner(make_learner, net, teacher, seed=4)
    method = PODNetGVAlign(learner=learner, options=PODNetGVAlign.Options(proxies=3))
    ctx = task_context(1, 2, 4)
    method.before_task(ctx)
    x = torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 3, 2, 0])
    lam, perm = _expected_mix(6, 4, 11)
    np.random.seed(11)
    out = method.main_forward(net)(x)
    x_mix = lam * x + (1 - lam) * x[perm]
    with torch.no_grad():
        plain, mixed, t_plain, t_mixed = net(x), net(x_mix), teacher(x), teacher(x_mix)
    assert torch.allclose(out["mixup"]["out"]["teacher"]["features"], t_mixed["features"])
    step = Step(x=x, y=y, out=out, teacher_out=t_plain, ctx=ctx, phase=None)
    terms = {k: float(v.detach()) for k, v in method.loss_terms(step).items()}
    factor = math.sqrt(4 / 2)
    flat = losses.cosine_embedding_distance(torch.cat([plain["features"], mixed["features"]]),
                                            torch.cat([t_plain["features"], t_mixed["features"]]))
    spatial = losses.pod_spatial_loss([torch.cat([t_plain["maps"][0], t_mixed["maps"][0]])],
                                      [torch.cat([plain["maps"][0], mixed["maps"][0]])])
    assert terms["pod_flat"] == pytest.approx(1.0 * factor * float(flat), rel=1e-5)
    assert terms["pod_spatial"] == pytest.approx(3.0 * factor * float(spatial), rel=1e-5)
    # the classification loss stays on the original images
    # (softmax cross-entropy: the reference's nca call, whose margin cancels)
    assert terms["ce"] == pytest.approx(float(F.cross_entropy(plain["logits"], y)), rel=1e-5)
    expected = lam * F.cross_entropy(mixed["logits"], y) + (1 - lam) * F.cross_entropy(mixed["logits"], y[perm])
    assert terms["mixup"] == pytest.approx(float(expected), rel=1e-5)


def test_mixup_off_leaves_the_base_method(make_learner):
    net = Net(_grown(CosineHead(2), 2))
    method = LUCIRGVAlign(learner=_learner(make_learner, net), options=LUCIRGVAlign.Options(mixup_weight=0.0))
    assert method.main_forward(net) is net


# -- stage 2: classifier alignment ---------------------------------------------------------------
def test_alignment_stage_trains_the_classifier_on_sampled_features(make_learner, task_context):
    torch.manual_seed(2)
    head = _grown(CosineHead(2), 3)
    learner = _learner(make_learner, Net(head))
    seen = {}

    def run_phase(phase):
        seen["phase"] = phase
        seen["trainable"] = [p.requires_grad for p in phase.param_groups[0]["params"]]

    learner.run_phase = run_phase
    task0 = (torch.tensor([[1.0, 0.0], [0.9, 0.1], [1.0, 0.3], [0.0, 1.0], [0.2, 1.0]]), torch.tensor([0, 0, 0, 1, 1]))
    calls = []

    def features(indices, split="train", flip=False, augment=False):
        calls.append(augment)
        return task0 if len(calls) == 1 else (torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.0]]), torch.tensor([0, 2, 3]))

    learner.features = features
    method = LUCIRGVAlign(learner=learner, options=LUCIRGVAlign.Options())
    method.after_train(task_context(0, 0, 3))  # class 2 has no image: not sampled
    phase = seen["phase"]
    assert phase.name == "classifier_alignment" and phase.epochs == 100 and phase.lr == 0.1
    assert phase.milestones == () and phase.train_mode is False and phase.use_teacher is False
    assert phase.weight_decay == 5e-4 and phase.momentum == 0.9
    assert [id(p) for p in phase.param_groups[0]["params"]] == [id(head.weight_new), id(head.sigma)]
    assert seen["trainable"] == [True, True]
    expected_cov, head_class = global_covariance(*task0, 3)
    assert head_class == 0 and torch.allclose(method.global_cov, expected_cov)
    assert calls == [True]  # the prototypes come from augmented views, as the code's trn_loader
    (x, y), = list(phase.batches(torch.Generator().manual_seed(0)))
    assert x.shape == (2, 2) and y.tolist() == [0, 1]
    protos, _ = class_prototypes(*task0, 3)
    z = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, protos[:2] + z @ gaussian_factor(expected_cov).t(), atol=1e-6)
    out = phase.forward(x)
    assert torch.allclose(out["logits"], head(x))
    loss = sum(phase.loss_terms(Step(x=x, y=y, out=out, teacher_out=None, ctx=None, phase=phase)).values()).detach()
    assert float(loss) == pytest.approx(float(F.cross_entropy(head(x), y).detach()), rel=1e-6)

    # the next task: old rows frozen by LUCIR's less-forget, trainable during the alignment
    # only; the covariance stays the first task's
    head.grow(1)
    method.before_task(task_context(1, 3, 4))
    assert head.weight_old.requires_grad is False
    method.after_train(task_context(1, 3, 4))
    assert seen["trainable"] == [True, True, True] and head.weight_old.requires_grad is False
    assert torch.allclose(method.global_cov, expected_cov)
    (x, y), = list(seen["phase"].batches(torch.Generator().manual_seed(0)))
    assert y.tolist() == [0, 2, 3] and x.shape == (3, 2)


def test_state_travels_in_the_checkpoint(make_learner):
    net = Net(_grown(CosineHead(2), 2))
    method = LUCIRGVAlign(learner=_learner(make_learner, net), options=LUCIRGVAlign.Options())
    method.global_cov = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
    method.lamb = 3.0
    restored = LUCIRGVAlign(learner=_learner(make_learner, net), options=LUCIRGVAlign.Options())
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.global_cov, method.global_cov) and restored.lamb == 3.0


def test_wrappers_subclass_their_base_and_take_the_codes_defaults():
    for wrapped, base in ((LUCIRGVAlign, LUCIR), (PODNetGVAlign, PODNet)):
        assert issubclass(wrapped, base) and issubclass(wrapped, GVAlignMixin)
        assert get_method(f"{base.name}_gvalign") is wrapped
        opts = wrapped.Options()
        assert (opts.mixup_alpha, opts.mixup_weight, opts.align_steps, opts.align_lr) == (1.0, 1.0, 100, 0.1)
        assert opts.align_samples_per_class == 1 and opts.align_milestones == () and opts.prototype_augment
        for field in base.Options.__dataclass_fields__:
            assert getattr(opts, field) == getattr(base.Options(), field)
    assert LUCIRGVAlign.distill_mixed is False and PODNetGVAlign.distill_mixed is True


def test_options_come_from_set():
    assert coerce_option(LUCIRGVAlign.Options, "align_milestones", "30,60", "lucir_gvalign") == (30, 60)
    config = build_config({
        "dataset": "synthetic", "approach": "podnet_gvalign", "scenario": "lt", "initial_classes": 10,
        "total_tasks": 2, "podnet_gvalign.align_steps": "20", "podnet_gvalign.mixup_alpha": "0.5",
    })
    opts = config.method_options()
    assert opts.align_steps == 20 and opts.mixup_alpha == 0.5 and opts.proxies == 10
    # Ranges are checked when the config is resolved (cil_core.ranges), before anything runs.
    with pytest.raises(ConfigError, match="lucir_gvalign.align_samples_per_class must be >= 1"):
        resolve_config(build_config({
            "dataset": "synthetic", "approach": "lucir_gvalign", "scenario": "lt", "initial_classes": 10,
            "total_tasks": 2, "lucir_gvalign.align_samples_per_class": "0",
        }))
