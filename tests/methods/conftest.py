"""Stand-ins for the engine objects a method's hooks read, so a hook runs on hand-made tensors.

``make_learner`` builds an object with the attributes ``Method``'s surface reads (``device``,
``config``, ``scenario``, ``train_labels``, ``memory``, ``model``, ``features``);
``run_phase`` records the Phase that ``Method.run_stage`` gives it instead of training. ``make_step`` builds a
:class:`~cil_core.engine.learner.Step` for a task with ``n_old`` old and ``n_seen`` seen
classes.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pytest
import torch

from cil_core.engine.learner import Step, TaskContext
from cil_core.memory import ExemplarMemory


def _task_context(task: int, n_old: int, n_seen: int, train_counts=None) -> TaskContext:
    counts = np.asarray(train_counts if train_counts is not None else np.ones(n_seen), dtype=np.int64)
    return TaskContext(
        task=task, num_tasks=task + 2, n_old=n_old, n_seen=n_seen,
        new_indices=np.arange(3, dtype=np.int64), memory_indices=np.zeros(0, dtype=np.int64),
        class_counts=counts, train_counts=counts,
    )


@pytest.fixture
def task_context():
    return _task_context


@pytest.fixture
def make_step():
    def make(logits, y, *, n_old, teacher_logits=None, task=None, features=None, teacher_features=None, x=None):
        logits = torch.as_tensor(logits, dtype=torch.float32)
        n_seen = logits.shape[1]
        out = {"logits": logits}
        if features is not None:
            out["features"] = torch.as_tensor(features, dtype=torch.float32)
        teacher_out = None
        if teacher_logits is not None:
            teacher_out = {"logits": torch.as_tensor(teacher_logits, dtype=torch.float32)}
            if teacher_features is not None:
                teacher_out["features"] = torch.as_tensor(teacher_features, dtype=torch.float32)
        ctx = _task_context(task if task is not None else (1 if n_old else 0), n_old, n_seen)
        x = torch.zeros(len(logits), 1) if x is None else x
        return Step(x=x, y=torch.as_tensor(y), out=out, teacher_out=teacher_out, ctx=ctx, phase=None)

    return make


@pytest.fixture
def make_learner():
    def make(*, task_classes=((0, 1), (2, 3)), model=None, train_labels=None, val_indices=None, features=None):
        phases = []
        config = SimpleNamespace(
            lr=0.1, epochs=8, batch_size=4, weight_decay=5e-4, momentum=0.9, lr_gamma=0.1,
            memory_per_class=2, backbone="convnet",
        )
        scenario = SimpleNamespace(
            task_classes=[list(c) for c in task_classes],
            val_indices=val_indices if val_indices is not None else [np.zeros(0, dtype=np.int64)] * len(task_classes),
            train_indices=[np.arange(2 * i, 2 * i + 2) for i in range(len(task_classes))],
        )
        learner = SimpleNamespace(
            device=torch.device("cpu"),
            config=config,
            scenario=scenario,
            train_labels=np.asarray(train_labels if train_labels is not None else [], dtype=np.int64),
            memory=ExemplarMemory(2),
            model=model,
            dataset=SimpleNamespace(augment_family="cifar"),
            phases=phases,
            run_phase=phases.append,
        )
        if features is not None:
            learner.features = features
        return learner

    return make


# --------------------------------------------------------------------------------------------
# The real engine on a tiny random data set, for the transcription tests (test_reference_*.py).
# --------------------------------------------------------------------------------------------


@dataclass
class PhaseRecord:
    """One phase the engine ran: what a reference transcription needs to recompute its step.

    ``model``/``teacher``: deep copies taken just before the phase (the step's starting point);
    ``method_state``: the approach's ``state_dict()`` then; ``memory``: the exemplar indices
    then; ``x``/``y``/``terms``: the first training step's batch and loss terms;
    ``grads``: the model's parameter gradients after the phase's single step, by name;
    ``group_params``/``group_grads``: the optimised tensors (phase param groups) before the
    step and their gradients (BiC's bias layer lives outside the model).
    """

    task: int
    phase: Any
    model: torch.nn.Module
    teacher: torch.nn.Module | None
    method_state: dict
    memory: np.ndarray
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    terms: dict = field(default_factory=dict)
    steps: int = 0
    grads: dict = field(default_factory=dict)
    group_params: list = field(default_factory=list)
    group_grads: list = field(default_factory=list)
    model_after: torch.nn.Module | None = None


class InOrderPipeline:
    """A tensor pipeline without augmentation or shuffling: batches of ``indices`` in order."""

    def __init__(self, train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor, test_y: np.ndarray) -> None:
        self.splits = {"train": (train_x, torch.as_tensor(train_y)), "test": (test_x, torch.as_tensor(test_y))}

    def _batches(self, indices, split, batch_size):
        x, y = self.splits[split]
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        for lo in range(0, len(idx), batch_size):
            b = idx[lo : lo + batch_size]
            yield x[b], y[b]

    def train_batches(self, indices, batch_size, generator):
        return self._batches(indices, "train", batch_size)

    def eval_batches(self, indices, split, batch_size):
        return self._batches(indices, split, batch_size)


# Per class: (training images, hold-out images), long-tailed. Three tasks; heads of 3 classes
# (with 2 a softmax pair's element-wise BCE equals its soft cross-entropy, hiding EEIL's form).
TINY_COUNTS = ((9, 2), (7, 2), (8, 2), (5, 1), (6, 2), (4, 1), (5, 1), (3, 1))
TINY_TASKS = ((0, 1, 2), (3, 4), (5, 6, 7))


def run_through_engine(approach: str, options: dict | None = None, *, tasks=TINY_TASKS, epochs: int = 1,
                       memory_per_class: int = 4, seed: int = 0, before_run: Callable[[Any], None] | None = None):
    """Run ``approach`` through the real :class:`~cil_core.engine.learner.Learner` on 8x8 random
    grey images (the classes of ``TINY_COUNTS``), one batch per epoch, and record every phase.

    Returns ``(learner, records)``. With ``epochs=1`` (and each extra stage's length set to 1
    in ``options``) every phase is exactly one SGD step, so ``PhaseRecord.grads`` are that
    step's gradients. ``before_run(learner)`` may patch the learner first (to record more).
    """
    from cil_core.config import RunConfig
    from cil_core.data.contract import Scenario
    from cil_core.engine.learner import Learner
    from cil_core.registry import get_method

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_classes = sum(len(t) for t in tasks)
    train_idx, val_idx, labels = [], [], []
    for c in range(n_classes):
        n_train, n_val = TINY_COUNTS[c]
        start = len(labels)
        labels += [c] * (n_train + n_val)
        train_idx.append(np.arange(start, start + n_train))
        val_idx.append(np.arange(start + n_train, start + n_train + n_val))
    labels = np.asarray(labels, dtype=np.int64)
    train_x = torch.randn(len(labels), 1, 8, 8)
    test_y = np.repeat(np.arange(n_classes), 3)
    test_x = torch.randn(len(test_y), 1, 8, 8)
    per_task = lambda arrays: [np.concatenate([arrays[c] for c in t]).astype(np.int64) for t in tasks]  # noqa: E731
    scenario = Scenario(
        class_order=list(range(n_classes)),
        label_map=np.arange(n_classes),
        task_classes=[list(t) for t in tasks],
        train_indices=per_task(train_idx),
        val_indices=per_task(val_idx),
        test_indices=[np.flatnonzero(np.isin(test_y, t)) for t in tasks],
        train_counts=np.array([TINY_COUNTS[c][0] for c in range(n_classes)]),
        counts_before_val=np.array([sum(TINY_COUNTS[c]) for c in range(n_classes)]),
    )
    dataset = SimpleNamespace(
        train=SimpleNamespace(labels=labels, images=train_x), test=SimpleNamespace(labels=test_y, images=test_x)
    )
    config = RunConfig(
        dataset="synthetic", approach=approach, scenario="lt", initial_classes=len(tasks[0]), total_tasks=len(tasks),
        seed=seed, epochs=epochs, lr=0.1, lr_milestones=(), weight_decay=5e-4, batch_size=512, backbone="convnet",
        memory_per_class=memory_per_class, device="cpu", checkpoint=False, amp=False, channels_last=False,
        options={approach: dict(options or {})},
    )
    learner = Learner(
        config=config, dataset=dataset, scenario=scenario, pipeline=InOrderPipeline(train_x, labels, test_x, test_y),
        device=torch.device("cpu"), out_dir=None, method_cls=get_method(approach),
    )
    records: list[PhaseRecord] = []
    engine_run_phase = learner.run_phase

    def recording_run_phase(phase):
        ctx = learner.current
        record = PhaseRecord(
            task=ctx.task, phase=phase, model=copy.deepcopy(learner.model),
            teacher=copy.deepcopy(learner.teacher) if learner.teacher is not None else None,
            method_state=copy.deepcopy(learner.method.state_dict()), memory=learner.memory.indices().copy(),
        )
        params = [p for g in phase.param_groups for p in g["params"]]
        record.group_params = [p.detach().clone() for p in params]
        loss_terms = phase.loss_terms

        def recording_terms(step):
            terms = loss_terms(step)
            if record.steps == 0:  # the training step (a validation pass comes after it)
                record.x, record.y = step.x.clone(), step.y.clone()
                record.terms = {k: v.detach().clone() for k, v in terms.items()}
            record.steps += 1
            return terms

        for p in list(learner.model.parameters()) + params:
            p.grad = None
        engine_run_phase(dataclasses.replace(phase, loss_terms=recording_terms))
        record.grads = {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.grad is not None}
        record.group_grads = [None if p.grad is None else p.grad.clone() for p in params]
        record.model_after = copy.deepcopy(learner.model)
        records.append(record)

    learner.run_phase = recording_run_phase
    if before_run is not None:
        before_run(learner)
    learner.run()
    return learner, records


@pytest.fixture
def engine_run():
    return run_through_engine


def split_heads(logits: torch.Tensor, tasks) -> list[torch.Tensor]:
    """The reference's ``outputs``: one logit block per task head (FACIL's ``model.heads``)."""
    out, start = [], 0
    for t in tasks:
        out.append(logits[:, start : start + len(t)])
        start += len(t)
    return out


def reference_gradients(record: PhaseRecord, criterion, *, train_mode: bool = True):
    """Re-run the recorded step from its starting model with ``criterion(outputs, teacher_outputs)``
    (the reference's per-head output lists, the teacher's or None) and return
    ``(loss, {name: grad})`` for comparison with what the engine did."""
    model = copy.deepcopy(record.model)
    model.train(train_mode)
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    logits = model(record.x)["logits"]
    teacher_logits = None
    if record.teacher is not None:
        with torch.no_grad():
            teacher_logits = record.teacher(record.x)["logits"]
    loss = criterion(logits, teacher_logits)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close_relative(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5, what: str = "") -> None:
    """``||got - want|| <= rel * ||want||`` (tensor-wise relative error)."""
    err = float((got.double() - want.double()).norm())
    scale = float(want.double().norm())
    assert err <= rel * max(scale, 1e-12), f"{what}: relative error {err / max(scale, 1e-12):.3g} > {rel}"


def assert_same_step(record: PhaseRecord, loss: torch.Tensor, grads: dict, rel: float = 1e-5) -> None:
    """The engine's summed loss terms and every parameter gradient equal the reference's."""
    assert record.steps >= 1
    assert_close_relative(sum(record.terms.values()), loss, rel, "loss")
    assert set(record.grads) == set(grads), (sorted(record.grads), sorted(grads))
    for name, g in grads.items():
        assert_close_relative(record.grads[name], g, rel, name)
