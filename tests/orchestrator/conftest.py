"""Shared helpers for the orchestrator's tests (no Ray, no torch imported here)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orchestrator.store import Store, trial_rel  # noqa: E402
from orchestrator.sweep import load_sweep_text  # noqa: E402
from orchestrator.trials import expand  # noqa: E402
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
        key = (spec.variant, spec.dataset, spec.scenario, spec.split[0], spec.split[1], spec.seed)
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


# ----------------------------------------------------------------------------- processes
# Fault-injection tests kill processes they started (a driver, a trial's worker) and then
# clean up what those left behind: these read /proc (Linux), without psutil.


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (children, grandchildren, ...), alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def process_alive(pid: int) -> bool:
    """Running (a zombie or a missing pid is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def kill_leftovers(pids: list[int], *, group: int | None = None) -> list[str]:
    """SIGKILL the processes of ``pids`` still alive (ours: recorded while their parent,
    started by the test, lived) and the process group ``group``; return what was killed."""
    alive = [pid for pid in pids if process_alive(pid)]
    killed = [f"{pid} {cmdline(pid)[:80]}" for pid in alive]
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return killed


def wait_for(predicate, timeout: float, every: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def json_lines(path: Path) -> list[dict]:
    """The complete JSON lines of a file being appended to (a torn last line is skipped)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
