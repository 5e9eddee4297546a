"""One run end to end on real data (scikit-learn's digits): the result file, the per-epoch
log, determinism of the three seeds, and a crash in the middle of a task followed by a rerun
of the same command that ends with the uninterrupted run's result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cil_core.engine.learner import Learner
from cil_core.experiment import run_experiment
from cil_core.results import NONDETERMINISTIC_KEYS, REQUIRED_KEYS, validate_result

REPO = Path(__file__).resolve().parents[2]


def digits_config(out: Path, approach: str = "dgr", **extra) -> dict:
    return {
        "dataset": "digits", "approach": approach, "scenario": "lt", "initial_classes": 4,
        "total_tasks": 4, "epochs": 3, "device": "cpu", "out": str(out), **extra,
    }


def deterministic_part(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in NONDETERMINISTIC_KEYS}


def test_digits_run_writes_result_and_per_epoch_log(tmp_path):
    result = run_experiment(digits_config(tmp_path))
    validate_result(result)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert set(REQUIRED_KEYS) <= set(on_disk)
    assert on_disk["acc_matrix"] == result["acc_matrix"]
    # acc[t][u]: after task t, on task u's classes; lower-triangular, one row per task
    assert [len(row) for row in result["acc_matrix"]] == [1, 2, 3, 4]
    assert result["task_classes"] == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert len(result["train_counts"]) == 10 and sum(result["shot_counts"].values()) == 10
    assert result["seeds"] == {"seed": 0, "order_seed": None, "lt_seed": 0}
    assert result["config"]["options"]["dgr"]["dakd"] is True
    assert result["acc_seen"][-1] > 10.0  # chance is 10% on 10 classes
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["phase"] == "train"]
    assert [(r["task"], r["epoch"]) for r in train] == [(t, e) for t in range(4) for e in range(3)]
    assert {"loss", "lr", "train_acc", "wall_s"} <= set(train[0])


def test_same_seeds_give_the_same_metrics_and_another_seed_differs(tmp_path):
    first = run_experiment(digits_config(tmp_path / "a", "finetune"))
    second = run_experiment(digits_config(tmp_path / "b", "finetune"))
    assert deterministic_part(first) == {**deterministic_part(second), "config": deterministic_part(first)["config"]}
    assert first["acc_matrix"] == second["acc_matrix"]
    other = run_experiment(digits_config(tmp_path / "c", "finetune", seed=1))
    assert other["acc_matrix"] != first["acc_matrix"]


class CrashMidTask(RuntimeError):
    """Stands in for a killed process: raised in the middle of a task's training."""


def test_crash_mid_task_then_same_command_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    reference = run_experiment(digits_config(tmp_path / "reference"))

    original_log = Learner._log

    def crash_in_task_2(self, record):
        original_log(self, record)
        if record["task"] == 2 and record["epoch"] == 1:
            raise CrashMidTask("simulated crash in task 2, epoch 1")

    monkeypatch.setattr(Learner, "_log", crash_in_task_2)
    out = tmp_path / "interrupted"
    with pytest.raises(CrashMidTask):
        run_experiment(digits_config(out))
    assert not (out / "result.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("task_*.pt")) == ["task_000.pt", "task_001.pt"]
    monkeypatch.setattr(Learner, "_log", original_log)

    reports: list[dict] = []
    resumed = run_experiment(digits_config(out), report=reports.append)
    # tasks 0 and 1 come back from the checkpoint (not retrained); 2 and 3 are trained
    assert [(r["task"], r["restored"]) for r in reports] == [(0, True), (1, True), (2, False), (3, False)]
    assert deterministic_part(resumed) == {**deterministic_part(reference), "config": deterministic_part(resumed)["config"]}
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert resumed["per_class_acc"] == reference["per_class_acc"]
    # the validation figures too, those of the restored tasks included (they ride in the checkpoints)
    assert resumed["val_acc_matrix"] == reference["val_acc_matrix"] and len(resumed["val_acc_matrix"]) == 4
    assert resumed["val_avg_incremental_accuracy"] == reference["val_avg_incremental_accuracy"] is not None
    assert [r["val_acc_seen"] for r in reports] == reference["val_acc_seen"]


def test_finished_run_is_not_trained_again(tmp_path):
    first = run_experiment(digits_config(tmp_path, "finetune", total_tasks=2, initial_classes=5))
    reports: list[dict] = []
    again = run_experiment(digits_config(tmp_path, "finetune", total_tasks=2, initial_classes=5), report=reports.append)
    assert again["acc_matrix"] == first["acc_matrix"] and again["wall_s"] == first["wall_s"]


@pytest.mark.slow
def test_cli_digits_run_and_divergence_exit_codes(tmp_path):
    """The console entry point: a real run exits 0 and prints its summary; a diverging run
    exits 3 with one line naming the task and epoch."""
    ok = subprocess.run(
        [sys.executable, "-m", "cil_core", "digits", "finetune", "lt", "5", "2", "--epochs", "1", "--out", str(tmp_path / "ok")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.count("running on the CPU") == 1  # said once
    assert json.loads(ok.stdout)["last_accuracy"] == json.loads((tmp_path / "ok" / "result.json").read_text())["last_accuracy"]
    hot = subprocess.run(
        [sys.executable, "-m", "cil_core", "digits", "finetune", "lt", "5", "2", "--epochs", "2", "--set", "lr=1e12", "--out", str(tmp_path / "hot")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert hot.returncode == 3, hot.stderr
    errors = [line for line in hot.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "non-finite" in errors[0] and "task 0" in errors[0] and "epoch 0" in errors[0], hot.stderr


def _cli_result(out: Path, *flags: str) -> dict:
    from cil_core.cli import main

    argv = ["synthetic", "finetune", "lt", "10", "2", "--device", "cpu", "--epochs", "1", "-q", "--out", str(out), *flags]
    assert main(argv) == 0
    return json.loads((out / "result.json").read_text())


def test_order_and_lt_seeds_reproduce_end_to_end(tmp_path):
    """--order-seed and --lt-seed through the CLI: the same pair twice gives the same result;
    another order seed another class order; another lt seed the same order but other images."""
    first = _cli_result(tmp_path / "a", "--order-seed", "3", "--lt-seed", "5")
    again = _cli_result(tmp_path / "b", "--order-seed", "3", "--lt-seed", "5")
    assert first["seeds"] == {"seed": 0, "order_seed": 3, "lt_seed": 5}
    assert deterministic_part(first)["acc_matrix"] == deterministic_part(again)["acc_matrix"]
    assert {k: v for k, v in deterministic_part(first).items() if k != "config"} == {
        k: v for k, v in deterministic_part(again).items() if k != "config"
    }
    other_order = _cli_result(tmp_path / "c", "--order-seed", "4", "--lt-seed", "5")
    assert other_order["class_order"] != first["class_order"]
    other_lt = _cli_result(tmp_path / "d", "--order-seed", "3", "--lt-seed", "6")
    assert other_lt["class_order"] == first["class_order"] and other_lt["train_counts"] == first["train_counts"]
    # Other images of the same sizes: the training losses (log.jsonl) differ; the same seeds repeat them.
    assert _epoch_losses(tmp_path / "a") == _epoch_losses(tmp_path / "b")
    assert _epoch_losses(tmp_path / "d") != _epoch_losses(tmp_path / "a")


def _epoch_losses(out: Path) -> list:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["phase"] != "eval"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_sigterm_behaves_as_ctrl_c(tmp_path, signum):
    """`python -m cil_core` stopped in task 1 (after task 0's checkpoint) by Ctrl-C or SIGTERM:
    exit 130 and the same one line; the same command then resumes after task 0 and finishes."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "cil_core", "synthetic", "finetune", "lt", "10", "2", "--device", "cpu",
            "--epochs", "10", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not (out / "checkpoints" / "task_000.pt").exists():
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert lines[-1] == "interrupted; finished tasks are kept in their checkpoints: run the same command again to resume"
    assert not (out / "result.json").exists()
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed after task 0" in again.stderr and (out / "result.json").exists()
