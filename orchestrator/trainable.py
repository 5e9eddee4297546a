"""The Ray Tune function trainable: one trial, one ``cil_core.run_experiment`` call on its resolved config.

Ray owns the runtime (placement, GPUs, retries, progress, experiment storage); ``cil_core`` (and so
torch) is imported here, in the worker, never when the orchestrator is imported. Kept here because
Ray cannot do it: skipping finished work by content hash across sweep edits (Ray's state is per
experiment); permanent failures (``failed.json``: a diverged loss or bad input stops every later
attempt at once; Ray would retry them to the same end); a URI store's trial folder through a local
scratch copy synced after every task (``cil_core`` writes files); per-trial logs at the
file-descriptor level in the trial's own folder (Ray's ``log_to_file`` swaps only ``sys.stdout``,
into its per-run experiment folder). ``attempts.jsonl``: one start and one end line per attempt.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from .store import ATTEMPTS, FAILED_JSON, RESULT_JSON, STDERR, STDOUT, TRIAL_JSON, Store, trial_rel
from .trials import TrialSpec, sampled_trial

DEFAULT_RUNNER = "cil_core:run_experiment"
PERMANENT_KINDS = {"TrainingDiverged": "diverged", "UserError": "bad_input"}
REPORT_COUNTERS = ("trial_id", "task", "num_tasks", "restored", "final")


class PermanentTrialFailure(RuntimeError):
    """Raised for a trial that failed permanently (see ``failed.json``): not worth retrying."""

    def __init__(self, tid: str, record: dict[str, Any]) -> None:
        super().__init__(f"trial {tid} failed permanently ({record.get('kind')}): {record.get('error')}")


class TrialFolder:
    """``trials/<id>/``: the store's folder itself, or (URI store) a scratch copy synced to it;
    ``files``: that folder as a local store (what the trial reads and writes)."""

    def __init__(self, store: Store, tid: str) -> None:
        self.store, self.id, self._synced = store, tid, {}
        if store.is_local:
            self.dir = store.local(trial_rel(tid))
        else:
            scratch = os.environ.get("ORCHESTRATOR_SCRATCH", Path(tempfile.gettempdir()) / "orchestrator-scratch")
            self.dir = Path(scratch) / tid
            store.download_dir(trial_rel(tid), self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = Store(self.dir)

    def log_attempt(self, **event: Any) -> None:
        with open(self.dir / ATTEMPTS, "a") as fh:
            fh.write(json.dumps({**event, "time": time.time()}, default=str) + "\n")

    def sync(self, *, done: bool = False) -> None:
        """URI store: copy what changed since the last sync; ``done``: then drop the scratch copy."""
        if self.store.is_local:
            return
        for path in sorted(p for p in self.dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            key, stat = str(path.relative_to(self.dir)), path.stat()
            if self._synced.get(key) != (stat.st_size, stat.st_mtime_ns):
                self.store.upload_file(path, trial_rel(self.id, key))
                self._synced[key] = (stat.st_size, stat.st_mtime_ns)
        if done:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redirect_output(folder: Path) -> Iterator[None]:
    """File descriptors 1 and 2 (so C code too) and ``cil_core``'s log records to the
    trial's ``stdout.log`` / ``stderr.log`` for the trial's duration."""
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    for fd, name, stream in ((1, STDOUT, sys.stdout), (2, STDERR, sys.stderr)):
        with contextlib.suppress(Exception):
            stream.flush()
        target = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout, sys.stderr = (open(fd, "w", closefd=False, buffering=1) for fd in (1, 2))  # Ray, pytest swap them
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger, level = logging.getLogger("cil_core"), logging.getLogger("cil_core").level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        for stream, fd, copy in zip((sys.stdout, sys.stderr), (1, 2), saved):
            stream.flush()
            os.dup2(copy, fd)
            os.close(copy)
        sys.stdout, sys.stderr = streams


def import_runner(path: str) -> Callable[..., dict]:
    """``"package.module:function"`` -> the function (the seam tests use for a fake runner)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name or "run_experiment")


def resolve_spec(config: dict[str, Any]) -> TrialSpec:
    """The trial's spec; for a search trial, the base spec with the sampled parameters."""
    spec = TrialSpec.from_json(config["trial"])
    return sampled_trial(spec, params, config.get("search")) if (params := config.get("params")) else spec


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    spec = resolve_spec(config)
    folder = TrialFolder(Store(config["store"]), spec.id)
    send = config.get("_report") or import_runner("ray.tune:report")  # tests: outside Ray, with a list.append
    validation_only = bool(config.get("search")) and not config.get("test_selection")

    def report(metrics: dict[str, Any]) -> None:
        """A search selecting on validation sees no test figure at all (it could not select or stop
        trials on test data by mistake), only ``val_`` keys and the counters."""
        send({k: v for k, v in metrics.items() if not validation_only or k.startswith("val_") or k in REPORT_COUNTERS})

    failed = folder.files.read_json(FAILED_JSON)
    if isinstance(failed, dict) and failed.get("permanent"):
        raise PermanentTrialFailure(spec.id, failed)
    finished = folder.files.read_json(RESULT_JSON)
    if isinstance(finished, dict) and finished.get("status") == "finished":
        folder.sync(done=True)  # a scratch copy may be ahead of the store
        report({"trial_id": spec.id, **final_metrics(finished), "restored": True})
        return

    folder.files.write_json(TRIAL_JSON, spec.to_json())
    attempt = (folder.files.read_text(ATTEMPTS) or "").count('"event": "start"') + 1
    node_id = None
    with contextlib.suppress(Exception):  # outside Ray (tests) there is no node
        import ray

        node_id = ray.get_runtime_context().get_node_id()
    folder.log_attempt(event="start", attempt=attempt, host=socket.gethostname(), pid=os.getpid(), node_id=node_id,
                       CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES"))
    run_config = {**spec.config, "out": str(folder.dir)}
    if float(spec.resources.get("gpu", 0) or 0) <= 0 and run_config.get("device") == "auto":
        run_config["device"] = "cpu"  # a trial that asked Ray for no GPU uses none (non-semantic)
    if run_config.get("num_workers") is None:  # data-loader workers: the CPUs the trial asked for
        run_config["num_workers"] = max(1, int(float(spec.resources.get("cpu", 1))))
    last_task, done_task = spec.split[1] - 1, {"task": None}

    def on_task(metrics: dict[str, Any]) -> None:
        done_task["task"] = metrics.get("task")
        folder.sync()
        if int(metrics.get("task", 0)) < last_task:  # the last task is the final report, once result.json exists
            report({"trial_id": spec.id, **metrics, "final": False, **{f"{p}avg_incremental_accuracy": metrics.get(
                f"{p}avg_incremental_accuracy_so_far") for p in ("", "val_")}})

    outcome = "stopped"  # unless it ends otherwise: Ray stopped it (early stopping, Ctrl-C)
    try:
        with redirect_output(folder.dir):
            result = import_runner(config.get("runner") or DEFAULT_RUNNER)(run_config, report=on_task)
        outcome = "finished"
    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised for Ray
        kind = next((PERMANENT_KINDS[c.__name__] for c in type(exc).__mro__ if c.__name__ in PERMANENT_KINDS), None)
        record = {"kind": kind or "error", "permanent": kind is not None, "attempt": attempt,
                  "error": f"{type(exc).__name__}: {exc}".strip(), "time": time.time(), "task": done_task["task"],
                  "traceback": traceback.format_exc().splitlines()[-40:]}  # task: the last finished one
        folder.files.write_json(FAILED_JSON, record)
        outcome = f"failed:{record['kind']}"
        if record["permanent"]:
            raise PermanentTrialFailure(spec.id, record) from exc
        raise
    finally:
        folder.log_attempt(event="end", attempt=attempt, outcome=outcome)
        folder.sync(done=outcome == "finished")
    folder.store.delete(trial_rel(spec.id, FAILED_JSON))  # an earlier attempt's (the scratch copy is gone)
    report({"trial_id": spec.id, **final_metrics(result), "restored": False})


def final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last report: the run's summary, under the same keys as the per-task reports."""
    tasks = len(result.get("acc_seen") or [])
    out: dict[str, Any] = {"task": tasks - 1, "num_tasks": tasks, "final": True}
    for p in ("", "val_"):  # the test figures, then their validation twins
        out |= {f"{p}{k}": (result.get(f"{p}{k}") or [None])[-1] for k in ("acc_seen", "task_avg_acc")}
        out |= {f"{p}{k}": result.get(f"{p}{k}") for k in ("avg_incremental_accuracy", "last_accuracy")}
        out[f"{p}avg_incremental_accuracy_so_far"] = out[f"{p}avg_incremental_accuracy"]
    return out
