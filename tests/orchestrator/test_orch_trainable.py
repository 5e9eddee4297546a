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
from conftest import SYNTHETIC_DEFAULTS

from orchestrator.cli import main
from orchestrator.status import collect, format_status, trial_status
from orchestrator.store import Store, trial_rel
from orchestrator.trainable import PermanentTrialFailure, run_trial
from orchestrator.trials import TrialSpec, resolve, trial_id


def spec_for(**extra) -> TrialSpec:
    config = resolve({"dataset": "synthetic", "approach": "finetune", "scenario": "lt", "initial_classes": 10, "total_tasks": 2, "seed": 0, **SYNTHETIC_DEFAULTS, **extra})
    return TrialSpec(id=trial_id(config), variant=config.approach, config=config.to_dict(), resources={"gpu": 0.0, "cpu": 1.0})


def call(store: Store, spec: TrialSpec, runner: str | None = None) -> list[dict]:
    reports: list[dict] = []
    run_trial({"trial": spec.to_json(), "store": store.root, "runner": runner, "driver": {"host": "test"}, "_report": reports.append})
    return reports


def flaky_cil_core(config, report=None):
    """The real ``cil_core.run_experiment``, whose first attempt dies (a transient error)
    right after task 0 finished and was checkpointed."""
    from cil_core import run_experiment

    marker = Path(config["out"]) / "flaky-marker"

    def on_task(metrics):
        report(metrics)
        if metrics["task"] == 0 and not marker.exists():
            marker.write_text("failed once")
            print("about to fail", file=sys.stderr)
            raise RuntimeError("simulated node failure")

    return run_experiment(config, report=on_task)


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines()]


def test_real_run_writes_its_files_and_reports_each_task(tmp_path):
    store = Store(tmp_path / "results")
    spec = spec_for()
    reports = call(store, spec)
    folder = store.local(trial_rel(spec.id))
    names = {p.name for p in folder.iterdir()}
    assert {"trial.json", "attempts.jsonl", "stdout.log", "stderr.log", "config.json", "log.jsonl", "checkpoints", "result.json"} <= names
    result = json.loads((folder / "result.json").read_text())
    assert result["device"] == "cpu" and result["versions"] and "git_sha" in result  # a GPU-less trial; result.json records the rest
    assert spec.id.endswith(result["fingerprint"]) and result["config"]["options"] == spec.config["options"]  # the config ran as resolved
    assert [r["task"] for r in reports] == [0, 1]  # the last task's step is the final report
    assert reports[-1]["final"] and reports[-1]["avg_incremental_accuracy"] == result["avg_incremental_accuracy"]
    assert reports[0]["avg_incremental_accuracy"] == reports[0]["avg_incremental_accuracy_so_far"]
    assert [(e["event"], e.get("outcome")) for e in _events(folder)] == [("start", None), ("end", "finished")]
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


def test_transient_failure_is_recorded_then_retried_with_cil_cores_own_resume(tmp_path):
    """The retry resumes from task 0's checkpoint (task 0 is not trained again) and ends with
    the result of an uninterrupted run."""
    store = Store(tmp_path / "results")
    spec = spec_for(initial_classes=10, total_tasks=3)
    runner = f"{__name__}:flaky_cil_core"
    with pytest.raises(RuntimeError, match="simulated node failure"):
        call(store, spec, runner)
    status = trial_status(store, spec, tail_lines=5)
    assert (status.state, status.permanent, status.failure_kind, status.task) == ("failed", False, "error", 0)
    assert status.stderr_tail[-1] == "about to fail"
    reports = call(store, spec, runner)
    assert reports[-1]["final"] and [r["task"] for r in reports] == [0, 1, 2]
    assert reports[0]["restored"] and not reports[1]["restored"]  # task 0 came from its checkpoint
    folder = store.local(trial_rel(spec.id))
    epochs = [(r["task"], r["epoch"]) for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if r["phase"] != "eval"]
    assert epochs.count((0, 0)) == 1 and epochs.count((1, 0)) == 1  # task 0 trained once, by the first attempt
    assert "resumed after task 0" in (folder / "stderr.log").read_text()
    assert not (folder / "failed.json").exists()
    assert [e["outcome"] for e in _events(folder) if e["event"] == "end"] == ["failed:error", "finished"]
    assert trial_status(store, spec).state == "done"
    uninterrupted = call(Store(tmp_path / "reference"), spec)
    result = json.loads((folder / "result.json").read_text())
    reference = json.loads((Store(tmp_path / "reference").local(trial_rel(spec.id)) / "result.json").read_text())
    assert uninterrupted[-1]["final"]
    for key in ("acc_matrix", "avg_incremental_accuracy", "per_class_acc", "fingerprint"):
        assert result[key] == reference[key], key


def test_status_tells_running_interrupted_pending_and_who_holds_the_lock(tmp_path):
    """An attempt that started and never ended is running while an orchestrator holds the
    lock, interrupted once none does; the task is the last checkpoint's."""
    import socket

    store = Store(tmp_path / "results")
    specs = [spec_for(seed=s) for s in range(4)]
    store.write_json("sweep.json", {"name": "t", "trials": [s.to_json() for s in specs]})
    start = json.dumps({"event": "start", "attempt": 1, "host": socket.gethostname(), "pid": 1})
    for spec in specs[:2]:
        store.write_text(trial_rel(spec.id, "attempts.jsonl"), start + "\n")
        store.write_bytes(trial_rel(spec.id, "checkpoints/task_000.pt"), b"x")
    store.write_text(trial_rel(specs[1].id, "attempts.jsonl"), start + "\n" + json.dumps({"event": "end", "outcome": "stopped"}) + "\n")
    store.write_json(trial_rel(specs[2].id, "result.json"), {"status": "finished"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = time.time()
    store.write_json(".orchestrator.lock", {"pid": os.getpid(), "host": socket.gethostname(), "started": now})
    assert [s.state for s in collect(store)] == ["running", "stopped", "done", "pending"]
    text = format_status(store, collect(store))
    assert "4 trials: 1 done, 1 running, 1 pending, 1 stopped, 0 interrupted, 0 failed" in text
    assert f"{specs[0].id}  running" in text and "1/2" in text
    store.write_json(".orchestrator.lock", {"pid": dead.pid, "host": socket.gethostname(), "started": now})
    assert [s.state for s in collect(store)] == ["interrupted", "stopped", "done", "pending"]
    text = format_status(store, collect(store))
    assert f"orchestrator: pid {dead.pid}" in text and "stale lock" in text


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
