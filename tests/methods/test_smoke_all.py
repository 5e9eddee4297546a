"""Every registered approach, two tasks on the synthetic data set: a complete result file, an
accuracy above chance, validation figures measured through the same predictions as the test
ones, and a resume from the first task's checkpoint that reproduces the run (validation
figures and the per-task reports included).

Registry-parametrised, so a new approach is covered the moment it registers. The extra stages'
lengths are shortened (a few epochs instead of BiC's 200 or the 2-stage's 30, 10 GVAlign
alignment steps instead of 100) to keep each approach to about a second on a CPU.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cil_core import metrics as M
from cil_core.engine.learner import Learner
from cil_core.experiment import run_experiment
from cil_core.registry import method_names
from cil_core.results import NONDETERMINISTIC_KEYS, VALIDATION_KEYS, validate_result

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


def _check_validation_path(monkeypatch) -> list[dict]:
    """After each task's evaluation, score the TEST split through the validation path
    (``evaluate_holdout``): it must give the test evaluation's per-class accuracies, so the
    validation pass predicts exactly as the test pass does (the final model of the task, the
    method's corrected logits). Returns the checks made, one per task."""
    original = Learner.evaluate
    checks: list[dict] = []

    def evaluate(self, ctx):
        row = original(self, ctx)
        via_val_path = self.evaluate_holdout(ctx, self.scenario.test_indices, "test")
        assert via_val_path["per_class_acc"] == pytest.approx(row["per_class_acc"])
        # the synthetic test set is balanced, so the class-balanced mean is the image mean
        assert via_val_path["acc_seen"] == pytest.approx(row["acc_seen"])
        # the hold-out images the method fits anything on are never scored
        used = self.method.trained_holdout_indices()
        scored = np.concatenate(self.validation_indices(ctx))
        held_out = np.sort(np.concatenate(self.scenario.val_indices[: ctx.task + 1]))
        assert np.intersect1d(scored, used).size == 0
        assert np.array_equal(np.union1d(scored, np.intersect1d(held_out, used)), held_out)
        checks.append({"task": ctx.task, "excluded": int(np.intersect1d(held_out, used).size)})
        return row

    monkeypatch.setattr(Learner, "evaluate", evaluate)
    return checks


@pytest.mark.parametrize("name", method_names())
def test_two_tasks_then_resume(name, tmp_path, monkeypatch):
    checks = _check_validation_path(monkeypatch)
    reports: list[dict] = []
    result = run_experiment(_config(name, tmp_path), report=reports.append)
    monkeypatch.undo()
    assert [c["task"] for c in checks] == [0, 1]
    assert (checks[-1]["excluded"] > 0) == (name == "bic")  # BiC's bias-correction set
    validate_result(result)
    # validation figures: one per task, finite percentages, the counts of classes without images
    assert set(VALIDATION_KEYS) <= set(result)
    assert [len(row) for row in result["val_acc_matrix"]] == [1, 2]
    for value in result["val_acc_seen"] + result["val_task_avg_acc"] + [result["val_avg_incremental_accuracy"]]:
        assert value is not None and 0.0 <= value <= 100.0
    assert len(result["val_classes_without_images"]) == 2 and result["val_images"][1] > 0
    assert [r["val_acc_seen"] for r in reports] == result["val_acc_seen"]
    assert reports[-1]["val_avg_incremental_accuracy_so_far"] == result["val_avg_incremental_accuracy"]
    # every figure a report carries is declared test or validation (a search forwards only the latter)
    bookkeeping = {"task", "num_tasks", "restored"}
    assert all(set(r) == bookkeeping | set(M.TEST_REPORT_KEYS) | set(M.VALIDATION_REPORT_KEYS) for r in reports)
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
    resumed_reports: list[dict] = []
    resumed = run_experiment(_config(name, tmp_path), report=resumed_reports.append)
    for key in result:
        if key not in NONDETERMINISTIC_KEYS:
            assert resumed[key] == result[key], key
    # the restored task's report carries the validation figures it had when trained
    assert [r["restored"] for r in resumed_reports] == [True, False]
    assert [{k: r[k] for k in M.VALIDATION_REPORT_KEYS} for r in resumed_reports] == [
        {k: r[k] for k in M.VALIDATION_REPORT_KEYS} for r in reports
    ]


def test_cosine_stage_schedule_in_the_log(tmp_path):
    run_experiment(_config("lucir_2stage", tmp_path))
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["phase"] == "stage2_lws" and r["task"] == 1]
    epochs = SHORT_STAGES["lucir_2stage"]["lucir_2stage.stage2_epochs"]
    # the classifier's group (the logged one): the run's lr in the first epoch, then the cosine
    assert lrs == pytest.approx([0.1] + [0.05 * (1 + math.cos(math.pi * e / epochs)) for e in range(1, epochs)])
