"""Runs on CUDA: DGR on ``synthetic`` at 32x32 with ResNet-32 (fp32 and bf16, compiled),
same-seed reproducibility, a checkpoint written on CUDA resumed on the CPU and back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cil_core.experiment import run_experiment
from cil_core.results import NONDETERMINISTIC_KEYS, validate_result

BASE = {
    "dataset": "synthetic", "approach": "dgr", "scenario": "lt", "initial_classes": 10, "total_tasks": 2,
    "image_size": 32, "backbone": "resnet32", "epochs": 4, "lr_milestones": [3], "batch_size": 32,
}
CHANCE_SEEN = 100.0 / 20  # 20 classes after task 2


def _epoch_losses(out: Path) -> list[float]:
    return [sum(r["loss"].values()) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_dgr_two_tasks_resnet32_compiled_on_cuda(tmp_path, amp):
    """Trains on the GPU through torch.compile in the asked precision, learns (well above
    chance), and records what ran."""
    result = run_experiment({**BASE, "device": "cuda", "amp": amp, "channels_last": True, "compile": True, "out": str(tmp_path)})
    validate_result(result)
    execution = result["execution"]
    assert execution["device"].startswith("cuda") and execution["device_name"] == torch.cuda.get_device_name()
    expected = "bf16" if amp and torch.cuda.is_bf16_supported() else "fp32"
    assert (execution["precision"], execution["memory_format"], execution["compiled"]) == (expected, "channels_last", True)
    assert len(result["acc_matrix"]) == 2 and np.isfinite(_epoch_losses(tmp_path)).all()
    assert result["acc_seen"][-1] > 3 * CHANCE_SEEN


def test_same_seeds_reproduce_on_cuda(tmp_path):
    """Two runs with the same seeds: identical scenario, and metrics equal up to cuDNN's
    nondeterministic kernel choice (benchmark mode; cil_core.experiment._cuda_setup): epoch
    losses within 0.5% relative, accuracies within 2 points (a handful of the 400 test images)."""
    config = {**BASE, "device": "cuda", "amp": False, "channels_last": True}
    a = run_experiment({**config, "out": str(tmp_path / "a")})
    b = run_experiment({**config, "out": str(tmp_path / "b")})
    for key in ("fingerprint", "class_order", "task_classes", "train_counts", "counts_before_val", "seeds"):
        assert a[key] == b[key], key
    assert _epoch_losses(tmp_path / "b") == pytest.approx(_epoch_losses(tmp_path / "a"), rel=0.005)
    assert np.allclose(np.concatenate(a["acc_matrix"]), np.concatenate(b["acc_matrix"]), atol=2.0)
    assert set(NONDETERMINISTIC_KEYS) <= set(a)


def _crash_after_first_task(monkeypatch):
    """Stop the run after task ``first`` finished and was checkpointed (as a kill would)."""
    from cil_core.engine import learner as learner_module

    original = learner_module.save_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(out_dir, task, state):
        original(out_dir, task, state)
        raise Stop(task)

    monkeypatch.setattr(learner_module, "save_checkpoint", save_then_stop)
    return Stop


def test_checkpoint_written_on_cuda_resumes_on_cpu_and_back(tmp_path, monkeypatch):
    """Task 0 on CUDA, task 1 on the CPU from task 0's checkpoint, task 2 on CUDA from task 1's:
    checkpoints hold device-independent tensors (loaded with map_location='cpu', moved to the
    run's device) and the device is not part of the config's fingerprint."""
    config = {**BASE, "initial_classes": 8, "total_tasks": 3, "epochs": 2, "lr_milestones": [], "out": str(tmp_path)}
    stop = _crash_after_first_task(monkeypatch)
    with pytest.raises(stop):
        run_experiment({**config, "device": "cuda"})
    with pytest.raises(stop):
        run_experiment({**config, "device": "cpu"})
    monkeypatch.undo()
    result = run_experiment({**config, "device": "cuda"})
    validate_result(result)
    assert result["execution"]["device"].startswith("cuda")
    assert len(result["acc_matrix"]) == 3
    tasks = [json.loads(line)["task"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert tasks == [0, 0, 1, 1, 2, 2]  # each task trained once, on its own device
    assert all(np.isfinite(np.concatenate(result["acc_matrix"])))
