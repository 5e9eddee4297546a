"""LUCIR, PODNet, their LT-CIL 2-stage variants and GVAlign's versions, one step at a time
through the real engine, against slow transcriptions of the reference code's formulas
(``lucir.py``, ``lucir_2stage.py``, ``podnet_2stage.py``, ``eeil_2stage.py`` of
xialeiliu/Long-Tailed-CIL; ``lucir_gvalign_2stage.py``, ``podnet_gvalign_2stage.py`` of
JAYATEJAK/GVAlign). Each compares the engine's loss and the gradient of every parameter its
optimiser holds, to 1e-5 relative; the parameter sets must be the reference optimiser's.
"""

from __future__ import annotations

import math

import pytest
import torch

from cil_core.backbones.podnet_resnet import PodnetCifarResNet

from transcription import (
    assert_matches,
    live_parameters,
    ref_cosine_embedding_loss,
    ref_cosine_linear,
    ref_cross_entropy,
    ref_lt_cil_nca,
    ref_margin_ranking,
    ref_pod_spatial,
    ref_podnet_cifar_forward,
    ref_reduce_proxies,
    reference_grads,
    steps,
    tiny_run,
)

# LUCIR-2stage's stage 1 only trains tasks averaging more than 10 images per class.
BIG = [[12, 11], [12, 11]]


def _heads_weight(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([model.head.weight_old, model.head.weight_new])


def _nonempty(params: dict) -> dict:
    return {n: p for n, p in params.items() if p.numel() > 0}


# -- LUCIR -----------------------------------------------------------------------------------
def lucir_reference(record, n_old: int, n_new: int, lamb_base: float = 5.0, mixup: bool = False):
    """``lucir.py``'s ``criterion`` (and ``lucir_gvalign_2stage.py``'s with the mixup term)."""
    model = record.model
    named = live_parameters(model)
    x, y = record.x, record.y
    bs = len(y)
    if mixup:
        lam, perm = record.extra["lam"], record.extra["perm"]
        x = torch.cat([x, lam * x + (1 - lam) * x[perm]])
    out = model(x)
    feats = out["features"]
    cos = ref_cosine_linear(feats, _heads_weight(model))  # 'wosigma'
    logits = model.head.sigma * cos  # 'wsigma'
    loss = ref_cross_entropy(logits[:bs], y)
    if record.teacher is not None:
        ref_feats = record.teacher(x)["features"]
        lamda = lamb_base * math.sqrt(n_old / n_new)  # Eq. 7
        loss = loss + ref_cosine_embedding_loss(feats[:bs], ref_feats[:bs]) * lamda
        loss = loss + 1.0 * ref_margin_ranking(cos[:bs], y, n_old, k=2, margin=0.5)
    if mixup:
        loss = loss + lam * ref_cross_entropy(logits[bs:], y) + (1 - lam) * ref_cross_entropy(logits[bs:], y[perm])
    params = {n: p for n, p in named.items() if n.startswith("backbone.") or n in ("head.weight_new", "head.sigma")}
    return loss, _nonempty(params)


@pytest.mark.parametrize("approach", ["lucir", "lucir_2stage", "lucir_gvalign"])
def test_lucir_main_step_matches_the_reference(approach):
    learner, records = tiny_run(approach, {"stage2_epochs": 1} if approach == "lucir_2stage" else
                                {"align_steps": 1} if approach == "lucir_gvalign" else {}, counts=BIG)
    assert learner.model.head.sigma.numel() == 1  # one shared scale
    for task, n_old in ((0, 0), (1, 2)):
        (record,) = steps(records, task, "train")
        assert (record.teacher is not None) == (task > 0)
        loss, params = lucir_reference(record, n_old, 2, mixup=approach == "lucir_gvalign")
        assert_matches(record, loss, reference_grads(loss, params))


def test_lucir_lambda_base_follows_the_reference_code():
    # lucir.py and GVAlign's LUCIR: --lamb 5 everywhere; lucir_2stage.py: 10 under the 90-epoch
    # (ImageNet) protocol
    from cil_core.methods.lucir import reference_lamb_base

    assert reference_lamb_base("lucir", "imagenet") == 5.0
    assert reference_lamb_base("lucir_gvalign", "imagenet") == 5.0
    assert reference_lamb_base("lucir_2stage", "imagenet") == 10.0
    assert reference_lamb_base("lucir_2stage", "cifar") == 5.0
    for approach, family, lamb in (("lucir", "imagenet", 5.0), ("lucir_2stage", "imagenet", 10.0)):
        learner, records = tiny_run(approach, {"stage2_epochs": 1} if "2stage" in approach else {},
                                    counts=BIG, augment_family=family)
        (record,) = steps(records, 1, "train")
        loss, params = lucir_reference(record, 2, 2, lamb_base=lamb)
        assert_matches(record, loss, reference_grads(loss, params))


# -- PODNet ------------------------------------------------------------------------------------
def podnet_reference(record, n_old: int, n_new: int, proxies: int = 10, mixup: bool = False):
    """``podnet_2stage.py``'s ``criterion`` (``podnet_gvalign_2stage.py``'s with the mixup term:
    the classification loss on the original half, POD on both halves)."""
    model = record.model
    named = live_parameters(model)
    x, y = record.x, record.y
    bs = len(y)
    if mixup:
        lam, perm = record.extra["lam"], record.extra["perm"]
        x = torch.cat([x, lam * x + (1 - lam) * x[perm]])
    out = model(x)
    feats, maps = out["features"], out["maps"]
    logits = model.head.sigma * ref_reduce_proxies(ref_cosine_linear(feats, _heads_weight(model)), proxies)
    loss = ref_lt_cil_nca(logits[:bs], y)
    if record.teacher is not None:
        ref = record.teacher(x)
        factor = math.sqrt((n_old + n_new) / n_new)  # sqrt(_n_classes / _task_size)
        loss = loss + ref_cosine_embedding_loss(feats, ref["features"]) * 1.0 * factor
        loss = loss + ref_pod_spatial(ref["maps"], maps) * 3.0 * factor
    if mixup:
        loss = loss + lam * ref_cross_entropy(logits[bs:], y) + (1 - lam) * ref_cross_entropy(logits[bs:], y[perm])
    params = {n: p for n, p in named.items() if n.startswith("backbone.") or n in ("head.weight_new", "head.sigma")}
    return loss, _nonempty(params)


@pytest.mark.parametrize("approach", ["podnet", "podnet_2stage", "podnet_gvalign"])
def test_podnet_main_step_matches_the_reference(approach):
    options = {"stage2_epochs": 1} if approach == "podnet_2stage" else {"align_steps": 1} if approach == "podnet_gvalign" else {}
    learner, records = tiny_run(approach, options, backbone="resnet8")
    # main_incremental.py: ``args.network + '_podnet'``
    assert isinstance(learner.model.backbone, PodnetCifarResNet)
    x = records[0].x
    learner.model.eval()
    with torch.no_grad():
        got, want = learner.model.backbone(x), ref_podnet_cifar_forward(learner.model.backbone, x)
    assert torch.allclose(got["features"], want["features"], rtol=1e-5, atol=1e-6)
    for task, n_old in ((0, 0), (1, 2)):
        (record,) = steps(records, task, "train")
        loss, params = podnet_reference(record, n_old, 2, mixup=approach == "podnet_gvalign")
        assert_matches(record, loss, reference_grads(loss, params))


# -- the 2-stage recipe's stage 2 ------------------------------------------------------------------
def stage2_reference(record, n_old: int, proxies: int | None):
    """``train_epoch_stage2``: the backbone in eval mode without gradients, each head's output
    (LUCIR/PODNet: 'wsigma', ``sigma * cos``; EEIL: the linear layer) times its LWS scales,
    ``nn.CrossEntropyLoss``. The optimiser: ``[heads[-1].parameters(), lws_models.parameters()]``."""
    model = record.model
    named = live_parameters(model)
    scale = record.values["group1.0"].clone().requires_grad_(True)
    with torch.no_grad():
        feats = model.backbone(record.x)["features"]
    if proxies is None:  # EEIL: the newest linear layer is learnt as a copy (group 0)
        w_new = record.values["group0.0"].clone().requires_grad_(True)
        b_new = record.values["group0.1"].clone().requires_grad_(True)
        w = torch.cat([model.head.weight.detach()[:n_old], w_new])
        b = torch.cat([model.head.bias.detach()[:n_old], b_new])
        rows = [torch.stack([(w[c] * feats[i]).sum() + b[c] for c in range(w.shape[0])]) for i in range(feats.shape[0])]
        logits = torch.stack(rows)
        params = {"group0.0": w_new, "group0.1": b_new}
    else:
        sims = ref_cosine_linear(feats, _heads_weight(model))
        if proxies > 1:
            sims = ref_reduce_proxies(sims, proxies)
        logits = model.head.sigma * sims
        params = _nonempty({"head.weight_new": named["head.weight_new"], "head.sigma": named["head.sigma"]})
    loss = ref_cross_entropy(logits * scale, record.y)
    params["group1.0"] = scale
    return loss, params


def reference_stage2_lrs(epoch: int, epochs: int, lr: float = 0.1, lr_factor: float = 10.0) -> tuple[float, float]:
    """The groups' lr in epoch ``epoch``: the optimiser's ``lr`` first, then
    ``adjust_learning_rate_stage_2(epoch)``: cosine for group 0, divided by lr_factor for group 1."""
    if epoch == 0:
        return lr, lr
    cosine = 0 + 0.5 * (lr - 0) * (1 + math.cos(epoch / epochs * 3.1415926535))
    return cosine, (1 / lr_factor) * cosine


@pytest.mark.parametrize("approach,proxies,epochs", [("lucir_2stage", 1, 30), ("podnet_2stage", 10, 30), ("eeil_2stage", None, 1)])
def test_stage_two_steps_match_the_reference(approach, proxies, epochs):
    options = {"finetune_epochs": 1} if approach == "eeil_2stage" else {}
    learner, records = tiny_run(approach, options, counts=BIG, backbone="convnet")
    for task, n_old in ((0, 0), (1, 2)):
        stage2 = steps(records, task, "stage2_lws")
        assert len(stage2) == epochs  # one batch per epoch here
        for epoch, record in enumerate(stage2):
            # ClassAwareSampler(num_samples_cls=4): each epoch's batch is visits of 4 images of one class
            y = record.y.tolist()
            assert all(len(set(y[k : k + 4])) == 1 for k in range(0, len(y), 4))
            head_lr, scale_lr = reference_stage2_lrs(epoch, 30)
            assert record.lrs["group1.0"] == pytest.approx(scale_lr, rel=1e-7)
            assert all(v == pytest.approx(head_lr, rel=1e-7) for n, v in record.lrs.items() if n != "group1.0")
            if epoch in (0, 1, epochs - 1):
                loss, params = stage2_reference(record, n_old, proxies)
                assert_matches(record, loss, reference_grads(loss, params))
    if proxies is None:  # the newest rows were written back; the old ones never moved
        first = steps(records, 1, "stage2_lws")[0]
        head = learner.model.head
        assert torch.equal(head.weight[:2], first.model.head.weight[:2])
        assert not torch.equal(head.weight[2:], first.model.head.weight[2:])


def test_lucir_two_stage_skips_stage_one_on_a_small_task():
    # task 1: 4 + 5 images for 2 classes, "len(trn_loader.dataset) > 10 * task_cls[t]" fails
    _, records = tiny_run("lucir_2stage", {"stage2_epochs": 2}, counts=[[12, 11], [4, 5]])
    assert len(steps(records, 0, "train")) == 1 and not steps(records, 1, "train")
    assert len(steps(records, 1, "stage2_lws")) == 2


# -- GVAlign's classifier alignment --------------------------------------------------------------
@pytest.mark.parametrize("approach,proxies", [("lucir_gvalign", 1), ("podnet_gvalign", 10)])
def test_alignment_step_matches_the_reference(approach, proxies):
    """``classifier_tune``: every head's 'wsigma' on the sampled features, cross-entropy against
    ``arange(num_classes)``; the optimiser holds ``self.model.heads.parameters()`` (old rows
    too), lr 0.1."""
    _, records = tiny_run(approach, {"align_steps": 2}, backbone="convnet")
    for task in (0, 1):
        align = steps(records, task, "classifier_alignment")
        assert len(align) == 2
        for record in align:
            assert record.y.tolist() == list(range(2 * (task + 1)))
            named = live_parameters(record.model)
            sims = ref_cosine_linear(record.x, _heads_weight(record.model))
            if proxies > 1:
                sims = ref_reduce_proxies(sims, proxies)
            loss = ref_cross_entropy(record.model.head.sigma * sims, record.y)
            params = _nonempty({n: named[n] for n in ("head.weight_old", "head.weight_new", "head.sigma")})
            assert set(record.lrs.values()) == {0.1}
            assert_matches(record, loss, reference_grads(loss, params))
