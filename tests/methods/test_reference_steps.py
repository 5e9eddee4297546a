"""One training step of each baseline through the real engine against the LT-CIL reference code.

Each test runs an approach with :func:`conftest.run_through_engine` (the real ``Learner``, tiny
random images, every phase one SGD step) and recomputes every recorded step from its starting
model with a slow transcription of the reference criterion (Long-Tailed-CIL's
``src/approach/*.py``, on FACIL): per-head output lists, per-head and per-class loops, FACIL's
own ``cross_entropy``. The loss and every parameter gradient must agree to 1e-5 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TASKS as TASKS
from conftest import assert_close_relative, assert_same_step, reference_gradients, split_heads


def facil_cross_entropy(outputs, targets, exp=1.0, size_average=True, eps=1e-5):
    """FACIL's ``Appr.cross_entropy`` (lwf.py, bic.py), line by line."""
    out = torch.nn.functional.softmax(outputs, dim=1)
    tar = torch.nn.functional.softmax(targets, dim=1)
    if exp != 1:
        out = out.pow(exp)
        out = out / out.sum(1).view(-1, 1).expand_as(out)
        tar = tar.pow(exp)
        tar = tar / tar.sum(1).view(-1, 1).expand_as(tar)
    out = out + eps / out.size(1)
    out = out / out.sum(1).view(-1, 1).expand_as(out)
    ce = -(tar * out.log()).sum(1)
    if size_average:
        ce = ce.mean()
    return ce


def _check_main_phases(records, criterion_for_task):
    mains = [r for r in records if r.phase.name == "train"]
    assert [r.task for r in mains] == [0, 1, 2]
    for r in mains:
        loss, grads = reference_gradients(r, lambda logits, old: criterion_for_task(r.task, logits, old, r))
        assert_same_step(r, loss, grads)
    return mains


# -- finetune, LwF ----------------------------------------------------------------------------
def test_finetune_step_matches_reference(engine_run):
    _, records = engine_run("finetune")

    def criterion(t, logits, old, record):
        outputs = split_heads(logits, TASKS[: t + 1])
        return torch.nn.functional.cross_entropy(torch.cat(outputs, dim=1), record.y)  # all_out / exemplars

    _check_main_phases(records, criterion)


def test_lwf_step_matches_reference(engine_run):
    _, records = engine_run("lwf")
    lamb, T = 1.0, 2.0

    def criterion(t, logits, old, record):
        outputs = split_heads(logits, TASKS[: t + 1])
        loss = 0
        if t > 0:
            outputs_old = split_heads(old, TASKS[:t])
            loss += lamb * facil_cross_entropy(torch.cat(outputs[:t], dim=1), torch.cat(outputs_old[:t], dim=1), exp=1.0 / T)
        return loss + torch.nn.functional.cross_entropy(torch.cat(outputs, dim=1), record.y)

    _check_main_phases(records, criterion)


# -- iCaRL ------------------------------------------------------------------------------------
def icarl_criterion(t, logits, old, record, lamb=1.0):
    """FACIL/LT-CIL ``icarl.Appr.criterion``."""
    outputs = split_heads(logits, TASKS[: t + 1])
    loss = F.cross_entropy(torch.cat(outputs, dim=1), record.y)
    if t > 0:
        outputs_old = split_heads(old, TASKS[:t])
        g = torch.sigmoid(torch.cat(outputs[:t], dim=1))
        q_i = torch.sigmoid(torch.cat(outputs_old[:t], dim=1))
        loss += lamb * sum(F.binary_cross_entropy(g[:, y], q_i[:, y]) for y in range(sum(len(c) for c in TASKS[:t])))
    return loss


def test_icarl_step_matches_reference(engine_run):
    learner, records = engine_run("icarl")
    mains = _check_main_phases(records, icarl_criterion)
    # FACIL's patience rule on the task's hold-out, whose loss is the criterion in eval mode.
    last = mains[-1]
    assert last.phase.schedule == "patience" and (last.phase.patience, last.phase.lr_min) == (5, 1e-4)
    val = learner.scenario.val_indices[2]
    assert last.phase.val_indices.tolist() == val.tolist()
    learner.model.eval()
    x, y = learner.pipeline.splits["train"][0][val], torch.as_tensor(learner.train_labels[val])
    with torch.no_grad():
        record = type(last)(task=2, phase=None, model=None, teacher=None, method_state={}, memory=None, y=y)
        want = icarl_criterion(2, learner.model(x)["logits"], learner.teacher(x)["logits"], record)
    assert learner.validation_loss(last.phase, learner.current) == pytest.approx(float(want), rel=1e-5)


def test_icarl_class_means_use_the_test_transform_only(engine_run):
    """``compute_mean_of_exemplars``: the exemplars' features under the test transform, each
    L2-normalised, averaged, re-normalised (no mirrored copies)."""
    learner, _ = engine_run("icarl")
    learner.model.eval()
    images = learner.pipeline.splits["train"][0]
    for c, idx in learner.memory.by_class.items():
        with torch.no_grad():
            feats = learner.model.backbone(images[torch.as_tensor(idx)])["features"]
        feats = feats / feats.norm(dim=1).view(-1, 1)
        mean = feats.mean(0) / feats.mean(0).norm()
        assert_close_relative(learner.method.class_means[c], mean, 1e-5, f"class {c} mean")


def facil_patience_lrs(valid_losses, lr=0.1, lr_factor=10, lr_patience=5, lr_min=1e-4):
    """FACIL's ``train_loop`` patience scheme: the lr of each epoch run, transcribed."""
    best_loss, patience, lrs = np.inf, lr_patience, []
    for valid_loss in valid_losses:
        lrs.append(lr)
        if valid_loss < best_loss:
            best_loss = valid_loss
            patience = lr_patience
        else:
            patience -= 1
            if patience <= 0:
                lr /= lr_factor
                if lr < lr_min:
                    break
                patience = lr_patience
    return lrs


def test_patience_schedule_matches_facil(monkeypatch):
    from cil_core.engine.learner import Learner, Phase, _Patience

    losses = [5.0, 4.0, 4.5, 4.2, 4.1, 4.3, 4.0, 3.9] + [3.95] * 40
    phase = Phase(name="p", indices=np.arange(1), epochs=len(losses), lr=0.1, milestones=(), param_groups=[],
                  loss_terms=None, weight_decay=0.0, batch_size=1, schedule="patience", patience=5, lr_min=1e-4)
    rule = _Patience(phase)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = []
    for v in losses:
        lrs.append(opt.param_groups[0]["lr"])
        if rule.step(v, opt):
            break
    assert lrs == facil_patience_lrs(losses)
    assert len(lrs) < len(losses)  # stopped once the lr fell below lr_min


def test_icarl_patience_schedule_through_the_engine(engine_run):
    """Several epochs: the lr of each epoch the engine ran follows FACIL's rule applied to the
    validation losses it computed (and the phase ends where FACIL's loop breaks)."""
    seen: dict = {"lrs": [], "losses": []}

    def record(learner):
        log, validation_loss = learner._log, learner.validation_loss

        def logged(rec):
            if rec["task"] == 1 and rec["phase"] == "train":
                seen["lrs"].append(rec["lr"])
            log(rec)

        def measured(phase, ctx):
            loss = validation_loss(phase, ctx)
            if ctx.task == 1:
                seen["losses"].append(loss)
            return loss

        learner._log, learner.validation_loss = logged, measured

    engine_run("icarl", {"lr_patience": 2, "lr_min": 1e-3}, epochs=30, before_run=record)
    assert seen["lrs"] == facil_patience_lrs(seen["losses"], lr_patience=2, lr_min=1e-3)
    assert min(seen["lrs"]) < 0.1  # the rule acted


# -- EEIL -------------------------------------------------------------------------------------
def eeil_criterion(t, logits, old, record, balanced, lamb=1.0, T=2.0):
    """FACIL/LT-CIL ``eeil.Appr.criterion``."""
    outputs = split_heads(logits, TASKS[: t + 1])
    loss = torch.nn.functional.cross_entropy(torch.cat(outputs, dim=1), record.y)
    if t > 0 and old is not None:
        outputs_old = split_heads(old, TASKS[:t])
        last_head_idx = t if balanced else (t - 1)
        for i in range(last_head_idx):
            loss += lamb * F.binary_cross_entropy(F.softmax(outputs[i] / T, dim=1), F.softmax(outputs_old[i] / T, dim=1))
    return loss


def test_eeil_steps_match_reference(engine_run):
    learner, records = engine_run("eeil", {"finetune_epochs": 1})
    _check_main_phases(records, lambda t, logits, old, r: eeil_criterion(t, logits, old, r, balanced=False))
    assert "kd" not in [r for r in records if r.phase.name == "train"][1].terms  # task 1: no distillation
    finetunes = [r for r in records if r.phase.name == "balanced_finetune"]
    assert [r.task for r in finetunes] == [1, 2]
    for r in finetunes:
        loss, grads = reference_gradients(r, lambda logits, old: eeil_criterion(r.task, logits, old, r, balanced=True))
        assert_same_step(r, loss, grads)
        # _get_train_loader(balanced=True): every exemplar + as many random new-task images
        # before the exemplars of the new classes exist; lr x 0.01, no steps inside the stage.
        new = learner.scenario.train_indices[r.task]
        memory = set(r.memory.tolist())
        assert not np.isin(learner.train_labels[r.memory], TASKS[r.task]).any()
        chosen_new = [i for i in r.phase.indices.tolist() if i not in memory]
        assert memory <= set(r.phase.indices.tolist())
        # randperm(len(trn))[:len(exemplars)]: all new images when there are fewer
        assert len(chosen_new) == min(len(memory), len(new)) == len(r.phase.indices) - len(memory)
        assert set(chosen_new) <= set(new.tolist())
        assert r.phase.lr == pytest.approx(0.1 * 0.01) and r.phase.milestones == ()


# -- joint ------------------------------------------------------------------------------------
def test_joint_step_matches_reference_and_keeps_training(engine_run):
    learner, records = engine_run("joint")

    def criterion(t, logits, old, record):
        return torch.nn.functional.cross_entropy(torch.cat(split_heads(logits, TASKS[: t + 1]), dim=1), record.y)

    mains = _check_main_phases(records, criterion)
    for before, r in zip(mains, mains[1:]):
        # JointDataset of every task so far, on the model the previous task left (no re-init)
        assert sorted(r.phase.indices.tolist()) == sorted(np.concatenate(learner.scenario.train_indices[: r.task + 1]).tolist())
        prev = dict(before.model_after.named_parameters())
        for name, p in r.model.named_parameters():
            if name.startswith("head"):
                p = p[: prev[name].shape[0]]
            assert torch.equal(p, prev[name]), name


def facil_joint_lrs(nepochs=160, lr=0.1):
    """LT-CIL ``joint.Appr``: the lr of group 0 (backbone) and group 1 (heads) in each epoch:
    the optimiser's lr for epoch 0, then ``adjust_learning_rate(e + 1)`` after epoch e."""
    group0, group1, current = [], [], lr
    for e in range(nepochs):
        group0.append(current)
        group1.append(lr)
        epoch = (e + 1) + 1
        if epoch <= 5:
            current = lr * epoch / 5
        elif epoch > 180:
            current = lr * 0.01
        elif epoch > 160:
            current = lr * 0.1
        else:
            current = lr
    return group0, group1


def test_joint_lr_rule_matches_reference():
    from cil_core.methods.joint import reference_backbone_lr_factor

    group0, group1 = facil_joint_lrs(200)
    factor = reference_backbone_lr_factor(160)
    assert [0.1 * factor(k) for k in range(200)] == pytest.approx(group0, rel=1e-12)
    assert max(group0[:160]) == min(group0[4:160]) == 0.1  # no decay within the script's 160 epochs


# -- BiC --------------------------------------------------------------------------------------
def bias_forward(outputs, alphas, betas):
    """FACIL's ``bias_forward``: head m through ``BiasLayer`` m (alpha * x + beta)."""
    return [alphas[m] * outputs[m] + betas[m] for m in range(len(outputs))]


def bic_criterion(t, logits, old, record, T=2.0):
    alphas, betas = record.method_state["alphas"], record.method_state["betas"]
    outputs = bias_forward(split_heads(logits, TASKS[: t + 1]), alphas, betas)
    loss_dist = 0
    if t > 0:
        targets_old = bias_forward(split_heads(old, TASKS[:t]), alphas, betas)
        loss_dist += facil_cross_entropy(torch.cat(outputs[:t], dim=1), torch.cat(targets_old[:t], dim=1), exp=1.0 / T)
    lamb = sum(len(c) for c in TASKS[:t]) / sum(len(c) for c in TASKS[: t + 1])
    return (1.0 - lamb) * torch.nn.functional.cross_entropy(torch.cat(outputs, dim=1), record.y) + lamb * loss_dist


def test_bic_steps_match_reference(engine_run):
    learner, records = engine_run("bic", {"bias_epochs": 1})
    mains = _check_main_phases(records, bic_criterion)
    assert mains[-1].method_state["alphas"][1] != 1.0  # task 2's step used a learnt layer
    stages = [r for r in records if r.phase.name == "bias_correction"]
    assert [r.task for r in stages] == [1, 2]
    for r in stages:
        t = r.task
        alpha, beta = (p.clone().requires_grad_(True) for p in r.group_params)
        with torch.no_grad():
            model = r.model.eval()
            outputs = split_heads(model(r.x)["logits"], TASKS[: t + 1])
        alphas = list(r.method_state["alphas"][:t]) + [alpha]
        betas = list(r.method_state["betas"][:t]) + [beta]
        loss = torch.nn.CrossEntropyLoss()(torch.cat(bias_forward(outputs, alphas, betas), dim=1), r.y)
        loss += 0.1 * ((beta**2) / 2)
        loss.backward()
        assert_close_relative(sum(r.terms.values()), loss.detach(), 1e-5, "bias loss")
        assert_close_relative(r.group_grads[0], alpha.grad, 1e-5, "alpha")
        assert_close_relative(r.group_grads[1], beta.grad, 1e-5, "beta")
    # Stage 0: ceil(0.1 x 4) = 1 image of each new class (its first) leaves the training data
    # for the validation set; the memory keeps 4 - 1 = 3 per class.
    per_class = math.ceil(0.1 * 4)
    for r in mains:
        new = learner.scenario.train_indices[r.task]
        val = [i for c in TASKS[r.task] for i in new[learner.train_labels[new] == c][:per_class]]
        assert set(val) <= set(learner.method.val_indices.tolist())
        assert not set(val) & set(r.phase.indices.tolist())
        assert set(new.tolist()) - set(val) <= set(r.phase.indices.tolist())
    assert sorted(learner.method.val_indices.tolist()) == sorted(stages[-1].phase.indices.tolist())
    left = {c: int((learner.train_labels[learner.scenario.train_indices[u]] == c).sum()) - per_class
            for u, task in enumerate(TASKS) for c in task}
    assert {c: len(v) for c, v in learner.memory.by_class.items()} == {c: min(4 - per_class, n) for c, n in left.items()}
