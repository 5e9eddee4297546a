"""The cost model (images per trial x seconds per image) against a hand computation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cil_core import cost_model
from cil_core.config import RunConfig
from cil_core.data.scenarios import long_tail_counts


def _config(**kw) -> RunConfig:
    base = dict(dataset="synthetic", approach="dgr", scenario="conv", initial_classes=10, total_tasks=2, epochs=2,
                backbone="resnet32", image_size=32, amp=False, memory_per_class=20, val_fraction=0.1)
    return RunConfig(**{**base, **kw})


def test_trial_hours_by_hand():
    # synthetic: 20 classes x 60 training images, 20 test images; conv: 60 - round(6) = 54 per class after the hold-out.
    # task 0 (10 classes): train 2 epochs x 540; herding 540/3; evaluation 200/3; memory then holds 10 x 20 = 200.
    # task 1 (10 more): train 2 x (540 + 200) with the teacher's forward (x 4/3); herding 540/3; evaluation 400/3.
    images = 2 * 540 + 540 / 3 + 200 / 3 + 2 * 740 * 4 / 3 + 540 / 3 + 400 / 3
    assert cost_model.images_processed(_config()) == pytest.approx(images)
    assert cost_model.trial_hours(_config(), "cpu") == pytest.approx(images * 7.5e-3 / 3600)
    # bf16 takes the bf16 figure; twice the side is four times the pixels
    assert cost_model.trial_hours(_config(amp=True, image_size=64), "cpu") == pytest.approx(images * 3.5e-3 * 4 / 3600)
    # joint: no memory, no teacher, trains on everything seen: 2 x 540 + 2 x 1080 + evaluation
    assert cost_model.images_processed(_config(approach="joint")) == pytest.approx(2 * 540 + 2 * 1080 + 200 / 3 + 400 / 3)


def test_pending_figures_and_unknown_sizes_give_none():
    assert cost_model.trial_hours(_config(), "gpu") is None  # GPU figures pending a gpu_check.sh report
    assert cost_model.trial_hours(_config(backbone="convnet"), "cpu") is None
    assert cost_model.trial_hours(_config(dataset="imagelist"), "cpu") is None
    with pytest.raises(ValueError, match="device_kind"):
        cost_model.trial_hours(_config(), "tpu")


def test_long_tailed_tasks_follow_the_profile():
    profile = long_tail_counts(500, 100, 100.0)
    assert cost_model.long_tail_profile(500, 100, 100.0) == profile.tolist()  # one formula, kept in step
    ltio = cost_model.task_images(_config(dataset="cifar100", scenario="ltio", initial_classes=50, total_tasks=6), cost_model.DATASET_SIZES["cifar100"])
    assert [k for k, _, _ in ltio] == [50, 10, 10, 10, 10, 10]
    assert ltio[0][1] == pytest.approx(sum(n - round(n * 0.1) for n in profile[:50]))  # head classes first
    lt = cost_model.task_images(_config(dataset="cifar100", scenario="lt", initial_classes=50, total_tasks=6), cost_model.DATASET_SIZES["cifar100"])
    mean = profile.sum() / 100
    assert lt[1][1] == pytest.approx(10 * (mean - round(mean * 0.1)))  # shuffled: the mean count per class


def test_cost_model_is_torch_free():
    code = "import sys, cil_core.cost_model, cil_core.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
