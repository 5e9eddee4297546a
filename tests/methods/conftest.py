"""Stand-ins for the engine objects a method's hooks read, so a hook runs on hand-made tensors.

``make_learner`` builds an object with the attributes the methods use (``device``, ``config``,
``scenario``, ``train_labels``, ``memory``, ``model``, ``features``); ``run_phase`` records
the Phase it is given instead of training. ``make_step`` builds a
:class:`~cil_core.engine.learner.Step` for a task with ``n_old`` old and ``n_seen`` seen
classes.
"""

from __future__ import annotations

from types import SimpleNamespace

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
