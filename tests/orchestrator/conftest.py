"""Shared helpers for the orchestrator's tests (no Ray, no torch imported here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orchestrator.store import Store, trial_rel  # noqa: E402
from orchestrator.sweep import expand, load_sweep_text  # noqa: E402
from orchestrator.tune_runner import write_sweep_meta  # noqa: E402

# A tiny real run: cil_core's synthetic data set (20 classes), 1 epoch per task, CPU.
SYNTHETIC_DEFAULTS = {"epochs": 1, "device": "cpu"}


def write_sweep(folder: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def fake_result(config: dict[str, Any], *, avg: float, last: float, tasks: int | None = None) -> dict[str, Any]:
    """A result.json with the schema cil_core writes (schema_version 1), made-up numbers."""
    tasks = tasks or int(config["total_tasks"])
    acc_seen = [last + (avg - last) * 2 * (tasks - 1 - t) / max(1, tasks - 1) for t in range(tasks)]
    mean_seen = sum(acc_seen) / tasks
    acc_seen = [a + (avg - mean_seen) for a in acc_seen]
    acc_seen[-1] = last
    return {
        "schema_version": 1,
        "status": "finished",
        "config": config,
        "seeds": {"seed": config.get("seed", 0), "order_seed": None, "lt_seed": 0},
        "class_order": [],
        "task_classes": [[0, 1]] * tasks,
        "train_counts": [],
        "acc_matrix": [[a] * (t + 1) for t, a in enumerate(acc_seen)],
        "task_avg_acc": acc_seen,
        "acc_seen": acc_seen,
        "avg_incremental_accuracy": avg,
        "avg_incremental_accuracy_seen": avg,
        "last_accuracy": last,
        "forgetting": 1.0,
        "shot_acc": {"many": [60.0] * tasks, "medium": [40.0] * tasks, "few": [None] * (tasks - 1) + [10.0]},
        "shot_counts": {"many": 35, "medium": 35, "few": 30},
        "per_class_acc": [],
        "wall_s": 1.0,
        "task_wall_s": [0.1] * tasks,
        "device": "cpu",
        "versions": {},
        "git_sha": None,
    }


def make_results(folder: Path, sweep_text: str, values: dict[tuple, tuple[float, float]]) -> Store:
    """A results directory as a run leaves it: sweep.json plus result.json for the trials
    in ``values`` ({(row, dataset, scenario, initial, tasks, seed): (avg, last)})."""
    where = str(folder / "sweep.yaml")
    sweep = load_sweep_text(sweep_text, where)
    trials = expand(sweep, where=where)
    store = Store(folder / "results")
    store.mkdir("")
    write_sweep_meta(store, sweep, trials, where, sweep_text)
    for spec in trials:
        key = (spec.row, spec.dataset, spec.scenario, spec.split[0], spec.split[1], spec.seed)
        if key in values:
            avg, last = values[key]
            store.write_json(trial_rel(spec.id, "result.json"), fake_result(spec.config, avg=avg, last=last))
            store.write_json(trial_rel(spec.id, "trial.json"), spec.to_json())
    return store


@pytest.fixture
def repo() -> Path:
    return REPO


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
