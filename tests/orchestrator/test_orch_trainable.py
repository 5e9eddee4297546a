"""The trainable outside Ray (its report seam is a list): files, resumption, failures, status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SYNTHETIC_DEFAULTS, fake_result

from orchestrator.cli import main
from orchestrator.status import collect, format_status, trial_status
from orchestrator.store import Store, trial_rel
from orchestrator.sweep import TrialSpec, normalise_config, trial_id
from orchestrator.trainable import PermanentTrialFailure, run_trial


@pytest.fixture(autouse=True)
def _restore_cuda_env(monkeypatch):
    """run_trial pins CUDA_VISIBLE_DEVICES in its process (here, pytest's): undo it after."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))


def spec_for(**extra) -> TrialSpec:
    config = normalise_config(
        {"dataset": "synthetic", "approach": "finetune", "scenario": "lt", "initial_classes": 10, "total_tasks": 2, "seed": 0, **SYNTHETIC_DEFAULTS, **extra}
    )
    return TrialSpec(id=trial_id(config), row=config["approach"], config=config, resources={"gpu": 0.0, "cpu": 1.0})


def call(store: Store, spec: TrialSpec, runner: str | None = None) -> list[dict]:
    reports: list[dict] = []
    run_trial({"trial": spec.to_json(), "store": store.root, "runner": runner, "driver": {"host": "test"}, "_report": reports.append})
    return reports


def fake_flaky(config, report=None):
    """Fails its first attempt (a transient error), then finishes."""
    out = Path(config["out"])
    marker = out / "flaky-marker"
    for task in range(int(config["total_tasks"])):
        if task == 1 and not marker.exists():
            marker.write_text("failed once")
            print("about to fail", file=sys.stderr)
            raise RuntimeError("simulated node failure")
        report({"task": task, "num_tasks": config["total_tasks"], "acc_seen": 50.0, "task_avg_acc": 50.0, "avg_incremental_accuracy_so_far": 50.0, "restored": False})
    result = fake_result(config, avg=50.0, last=40.0)
    (out / "result.json").write_text(json.dumps(result))
    return result


def test_real_run_writes_its_files_and_reports_each_task(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU-less trial must not see it
    store = Store(tmp_path / "results")
    spec = spec_for()
    reports = call(store, spec)
    folder = store.local(trial_rel(spec.id))
    names = {p.name for p in folder.iterdir()}
    assert {"trial.json", "env.json", "progress.json", "attempts.jsonl", "stdout.log", "stderr.log", "config.json", "log.jsonl", "checkpoints", "result.json"} <= names
    env = json.loads((folder / "env.json").read_text())
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["cuda_available"] is False
    assert env["torch"] and env["cil_core"] and "sha" in env["git"] and env["driver"] == {"host": "test"}
    result = json.loads((folder / "result.json").read_text())
    assert [r["task"] for r in reports] == [0, 1]  # the last task's step is the final report
    assert reports[-1]["final"] and reports[-1]["avg_incremental_accuracy"] == result["avg_incremental_accuracy"]
    assert reports[0]["avg_incremental_accuracy"] == reports[0]["avg_incremental_accuracy_so_far"]
    assert json.loads((folder / "progress.json").read_text())["state"] == "finished"
    assert "task 1" in (folder / "stderr.log").read_text()  # cil_core's log lines land in the trial's stderr.log
    assert json.loads((folder / "trial.json").read_text())["id"] == spec.id
    # called again: nothing is trained, the finished result is reported once
    again = call(store, spec)
    assert len(again) == 1 and again[0]["restored"] and again[0]["avg_incremental_accuracy"] == result["avg_incremental_accuracy"]
    assert (folder / "attempts.jsonl").read_text().count('"event": "start"') == 1
    assert trial_status(store, spec).state == "done"


def test_diverged_trial_fails_permanently_and_is_not_retrained(tmp_path, capsys):
    store = Store(tmp_path / "results")
    spec = spec_for(lr=1e12, epochs=3)
    with pytest.raises(PermanentTrialFailure, match="diverged"):
        call(store, spec)
    folder = store.local(trial_rel(spec.id))
    failed = json.loads((folder / "failed.json").read_text())
    assert failed["kind"] == "diverged" and failed["permanent"] and "non-finite" in failed["error"]
    # the failure names the task and epoch, and training stopped there: no later epoch ran
    where = re.search(r"in task (\d+), phase train, epoch (\d+)", failed["error"])
    assert where, failed["error"]
    log_lines = (folder / "log.jsonl").read_text().splitlines() if (folder / "log.jsonl").exists() else []
    epoch_lines = [line for line in log_lines if '"phase": "eval"' not in line]  # one eval line per finished task
    assert len(epoch_lines) == 3 * int(where[1]) + int(where[2])  # the tasks before, then epochs 0..N-1; N diverged
    started = time.monotonic()
    with pytest.raises(PermanentTrialFailure):  # a retry stops at once, without training
        call(store, spec)
    assert time.monotonic() - started < 1.0
    assert (folder / "attempts.jsonl").read_text().count('"event": "start"') == 1
    status = trial_status(store, spec, tail_lines=5)
    assert (status.state, status.permanent, status.failure_kind) == ("failed", True, "diverged")
    store.write_json("sweep.json", {"name": "t", "trials": [spec.to_json()]})
    assert main(["status", store.root]) == 0
    out = capsys.readouterr().out
    assert "1 failed" in out and "permanent diverged: TrainingDiverged: loss became non-finite" in out
    assert f"in task {where[1]}, phase train, epoch {where[2]}" in out
    assert f"--- {spec.id} failed (permanent, diverged)" in out


def test_transient_failure_is_recorded_then_retried_from_the_files(tmp_path):
    store = Store(tmp_path / "results")
    spec = spec_for()
    runner = f"{__name__}:fake_flaky"
    with pytest.raises(RuntimeError, match="simulated node failure"):
        call(store, spec, runner)
    status = trial_status(store, spec, tail_lines=5)
    assert (status.state, status.permanent, status.failure_kind, status.task) == ("failed", False, "error", 0)
    assert status.stderr_tail[-1] == "about to fail"
    reports = call(store, spec, runner)
    assert reports[-1]["final"]
    folder = store.local(trial_rel(spec.id))
    assert not (folder / "failed.json").exists()
    assert (folder / "attempts.jsonl").read_text().count('"event": "start"') == 2
    assert trial_status(store, spec).state == "done"


def test_status_tells_running_interrupted_pending_and_who_holds_the_lock(tmp_path):
    store = Store(tmp_path / "results")
    specs = [spec_for(seed=s) for s in range(4)]
    store.write_json("sweep.json", {"name": "t", "trials": [s.to_json() for s in specs]})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    now = time.time()
    base = {"host": socket.gethostname(), "task": 0, "num_tasks": 2, "heartbeat": now}
    store.write_json(trial_rel(specs[0].id, "progress.json"), {**base, "state": "running", "pid": os.getpid()})
    store.write_json(trial_rel(specs[1].id, "progress.json"), {**base, "state": "running", "pid": dead.pid})
    store.write_json(trial_rel(specs[2].id, "result.json"), {"status": "finished"})
    store.write_json(".orchestrator.lock", {"pid": dead.pid, "host": socket.gethostname(), "started": now})
    states = [s.state for s in collect(store)]
    assert states == ["running", "interrupted", "done", "pending"]
    text = format_status(store, collect(store))
    assert "4 trials: 1 done, 1 running, 1 pending, 0 stopped, 1 interrupted, 0 failed" in text
    assert f"orchestrator: pid {dead.pid}" in text and "stale lock" in text
    assert f"{specs[0].id}  running" in text and "1/2" in text


def test_corrupt_checkpoint_of_an_interrupted_trial_is_trained_again_not_a_crash_loop(tmp_path):
    """Through the trainable: a trial interrupted in its last task whose newest checkpoint is
    truncated on disk resumes from the one before, trains the task again, and finishes."""
    store = Store(tmp_path / "results")
    spec = spec_for(initial_classes=10, total_tasks=3)
    call(store, spec)
    folder = store.local(trial_rel(spec.id))
    first = json.loads((folder / "result.json").read_text())
    (folder / "result.json").unlink()  # as if it was stopped in task 2 ...
    for path in (folder / "checkpoints").glob("task_002.*"):
        path.unlink()
    ckpt = folder / "checkpoints" / "task_001.pt"  # ... and task 1's checkpoint was then damaged
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert trial_status(store, spec).state != "done"
    reports = call(store, spec)
    assert [(r["task"], r["restored"]) for r in reports] == [(0, True), (1, False), (2, False)] and reports[-1]["final"]
    assert (folder / "checkpoints" / "task_001.pt.corrupt").exists() and (folder / "checkpoints" / "task_002.pt").exists()
    assert "fails its checksum" in (folder / "stderr.log").read_text()
    again = json.loads((folder / "result.json").read_text())
    assert again["acc_matrix"] == first["acc_matrix"] and again["avg_incremental_accuracy"] == first["avg_incremental_accuracy"]
    assert (folder / "attempts.jsonl").read_text().count('"event": "start"') == 2
    assert trial_status(store, spec).state == "done" and not (folder / "failed.json").exists()
