"""Joint training: every image of every class seen so far; optionally a fresh network per task."""

from __future__ import annotations

import numpy as np
import torch

from cil_core.engine.network import IncrementalNet, LinearHead
from cil_core.methods.joint import Joint, Options
from cil_core.registry import get_backbone


def test_trains_on_the_union_of_all_tasks_so_far(make_learner, task_context):
    learner = make_learner(task_classes=([0, 1], [2, 3], [4]))
    method = Joint(learner=learner, options=Options())
    assert Joint.uses_memory is False
    assert method.train_indices(task_context(0, 0, 2)).tolist() == [0, 1]
    assert method.train_indices(task_context(2, 4, 5)).tolist() == [0, 1, 2, 3, 4, 5]


def test_reinitialises_the_network_before_each_later_task(make_learner, task_context):
    backbone = get_backbone("convnet")(in_channels=3)
    model = IncrementalNet(backbone, LinearHead(backbone.feature_dim))
    model.head.grow(4)
    learner = make_learner(model=model)
    learner.dataset.train = type("Split", (), {"images": torch.zeros(1, 3, 8, 8)})()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Joint(learner=learner, options=Options(reinit=False)).before_task(task_context(1, 2, 4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    Joint(learner=learner, options=Options(reinit=True)).before_task(task_context(1, 2, 4))
    after = model.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["backbone.stages.0.0.weight"], after["backbone.stages.0.0.weight"])
    assert after["head.weight"].shape == before["head.weight"].shape
    assert np.isfinite(after["head.weight"].numpy()).all()
