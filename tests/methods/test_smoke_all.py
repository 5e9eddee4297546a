"""Every registered approach, two tasks on the synthetic data set: a complete result file, an
accuracy above chance, and a resume from the first task's checkpoint that reproduces the run.

Registry-parametrised, so a new approach is covered the moment it registers. The extra stages'
lengths are shortened (a few epochs instead of BiC's 200 or the 2-stage's 30, 10 GVAlign
alignment steps instead of 100) to keep each approach to about a second on a CPU.
"""

from __future__ import annotations

import json
import math

import pytest

from cil_core.experiment import run_experiment
from cil_core.registry import method_names
from cil_core.results import NONDETERMINISTIC_KEYS, validate_result

EPOCHS = 3
SHORT_STAGES = {
    "bic": {"bic.bias_epochs": 3},
    "eeil": {"eeil.finetune_epochs": 2},
    "eeil_2stage": {"eeil_2stage.finetune_epochs": 2, "eeil_2stage.stage2_epochs": 3},
    "lucir_2stage": {"lucir_2stage.stage2_epochs": 3},
    "podnet_2stage": {"podnet_2stage.stage2_epochs": 3},
    "lucir_gvalign": {"lucir_gvalign.align_steps": 10},
    "podnet_gvalign": {"podnet_gvalign.align_steps": 10},
}


def _config(name: str, out) -> dict:
    return {
        "dataset": "synthetic",
        "approach": name,
        "scenario": "lt",
        "initial_classes": 10,
        "total_tasks": 2,
        "epochs": EPOCHS,
        "device": "cpu",
        "out": str(out),
        **SHORT_STAGES.get(name, {}),
    }


@pytest.mark.parametrize("name", method_names())
def test_two_tasks_then_resume(name, tmp_path):
    result = run_experiment(_config(name, tmp_path))
    validate_result(result)
    assert json.loads((tmp_path / "result.json").read_text())["acc_matrix"] == result["acc_matrix"]
    assert result["status"] == "finished" and result["config"]["approach"] == name
    assert [len(row) for row in result["acc_matrix"]] == [1, 2]
    assert len(result["per_class_acc"]) == 20
    assert all(math.isfinite(v) for row in result["acc_matrix"] for v in row)
    # chance: 1 in 10 after the first task, 1 in 20 after the second
    assert result["acc_seen"][0] > 100 / 10 and result["acc_seen"][1] > 100 / 20

    # Resume: drop the last task's checkpoint and the result; the run restarts after task 0
    # from the checkpoint (model, memory, the method's own state) and must reproduce task 1.
    (tmp_path / "result.json").unlink()
    for path in (tmp_path / "checkpoints").glob("task_001*"):
        path.unlink()
    resumed = run_experiment(_config(name, tmp_path))
    for key in result:
        if key not in NONDETERMINISTIC_KEYS:
            assert resumed[key] == result[key], key


def test_cosine_stage_schedule_in_the_log(tmp_path):
    run_experiment(_config("lucir_2stage", tmp_path))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["phase"] == "stage2_lws" and r["task"] == 1]
    epochs = SHORT_STAGES["lucir_2stage"]["lucir_2stage.stage2_epochs"]
    # the classifier's group (the logged one): the run's lr in the first epoch, then the cosine
    assert lrs == pytest.approx([0.1] + [0.05 * (1 + math.cos(math.pi * e / epochs)) for e in range(1, epochs)])
