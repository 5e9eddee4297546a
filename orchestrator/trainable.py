"""The Ray Tune function trainable: one trial = one ``cil_core.run_experiment`` call.

It runs in a Ray worker process, in a thread Tune owns. Everything it needs is in its
``config`` (the trial's spec, the results store's absolute path or URI, the runner's
import path); it never uses the working directory Ray gives it. ``cil_core`` (and so
torch) is imported here, inside the function, never when the orchestrator is imported.

Per trial it writes ``trials/<id>/``: ``trial.json``, ``env.json``, ``progress.json``
(with a heartbeat), ``attempts.jsonl``, ``stdout.log``/``stderr.log`` (the process's file
descriptors are redirected there for the trial's duration) and, when it fails,
``failed.json``. ``cil_core`` writes ``config.json``, ``log.jsonl``, ``checkpoints/`` and
``result.json`` there (its ``out``) and resumes from its checkpoints when called again.

Failures: a run whose loss diverges (``TrainingDiverged``) or whose input is bad
(``cil_core.errors.UserError``: a missing data set, an impossible option) is permanent:
``failed.json`` says so and every later attempt stops at once without training, so Ray's
retries cost nothing and a rerun leaves it alone until ``--retry-failed``. Anything else
is transient: Ray retries it (``--max-failures``) and the retry resumes from the last
finished task.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from .store import (
    ATTEMPTS,
    ENV_JSON,
    FAILED_JSON,
    PROGRESS_JSON,
    RESULT_JSON,
    STDERR,
    STDOUT,
    TRIAL_JSON,
    Store,
    atomic_write_json,
    trial_rel,
)
from .trials import TrialSpec, sampled_trial

DEFAULT_RUNNER = "cil_core:run_experiment"
HEARTBEAT_S = float(os.environ.get("ORCHESTRATOR_HEARTBEAT_S", "30"))
PERMANENT_KINDS = {"TrainingDiverged": "diverged", "UserError": "bad_input"}


class PermanentTrialFailure(RuntimeError):
    """Raised for a trial that failed permanently (see ``failed.json``): not worth retrying."""


# ----------------------------------------------------------------------------- files


class TrialFiles:
    """The trial's folder: written in place on a local store, in a scratch folder synced
    to the store after every task on a URI store."""

    def __init__(self, store: Store, tid: str) -> None:
        self.store = store
        self.id = tid
        if store.is_local:
            self.dir = store.local(trial_rel(tid))
        else:
            scratch = Path(os.environ.get("ORCHESTRATOR_SCRATCH", Path(tempfile.gettempdir()) / "orchestrator-scratch"))
            self.dir = scratch / tid
            store.download_dir(trial_rel(tid), self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._synced: dict[str, tuple[int, int]] = {}

    def path(self, name: str) -> Path:
        return self.dir / name

    def read_json(self, name: str) -> Any:
        import json

        try:
            return json.loads(self.path(name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_json(self, name: str, obj: Any) -> None:
        with self._lock:
            atomic_write_json(self.path(name), obj)

    def append_json_line(self, name: str, obj: Any) -> None:
        import json

        with self._lock, open(self.path(name), "a") as fh:
            fh.write(json.dumps(obj, default=str) + "\n")

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()
        if not self.store.is_local:
            self.store.delete(trial_rel(self.id, name))

    def sync(self) -> None:
        """Copy what changed since the last sync to the store (URI stores only)."""
        if self.store.is_local:
            return
        with self._lock:
            for path in sorted(p for p in self.dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
                stat = path.stat()
                key = str(path.relative_to(self.dir))
                if self._synced.get(key) == (stat.st_size, stat.st_mtime_ns):
                    continue
                self.store.upload_file(path, trial_rel(self.id, key))
                self._synced[key] = (stat.st_size, stat.st_mtime_ns)

    def cleanup(self) -> None:
        """Remove the scratch copy of a finished trial (URI stores only)."""
        if not self.store.is_local:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- helpers


def import_runner(path: str) -> Callable[..., dict]:
    """``"package.module:function"`` -> the function (the seam tests use for a fake runner)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name or "run_experiment")


_GIT: dict[str, Any] = {}


def git_revision() -> dict[str, Any]:
    """The project's git revision and whether tracked files differ from it (read-only git
    calls), cached per process."""
    if not _GIT:
        here = Path(__file__).resolve().parent
        try:
            sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
            dirty = None
            if sha:  # tracked files changed since that commit?
                status = subprocess.run(  # GIT_OPTIONAL_LOCKS=0: status must not rewrite the index
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=here,
                    capture_output=True,
                    text=True,
                    timeout=5,
                    env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
                )
                dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
            _GIT.update(sha=sha or None, dirty=dirty)
        except (OSError, subprocess.SubprocessError):
            _GIT.update(sha=None, dirty=None)
    return dict(_GIT)


def _ray_context() -> dict[str, Any]:
    try:
        import ray

        ctx = ray.get_runtime_context()
        return {
            "ray": ray.__version__,
            "node_id": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }
    except Exception as exc:  # noqa: BLE001 - outside Ray (a direct call): say so
        return {"ray": None, "ray_error": f"{type(exc).__name__}: {exc}"}


def environment_info(spec: TrialSpec, driver: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "trial": spec.id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started": time.time(),
        "resources": spec.resources,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "git": git_revision(),
        "driver": driver,
        **_ray_context(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if info["cuda_available"] else []
        info["torch_threads"] = torch.get_num_threads()
    except Exception as exc:  # noqa: BLE001
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import cil_core

        info["cil_core"] = getattr(cil_core, "__version__", None)
    except Exception:  # noqa: BLE001
        info["cil_core"] = None
    return info


def pin_devices(spec: TrialSpec) -> None:
    """A trial sees only the GPUs Ray gave it, and none when it asked for none.

    Recent Ray no longer hides GPUs from tasks that requested zero, so it is done here,
    before anything imports torch in this process.
    """
    if float(spec.resources.get("gpu", 0) or 0) <= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return
    try:
        import ray

        ids = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # noqa: BLE001
        return
    if ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)


@contextlib.contextmanager
def redirect_output(stdout_path: Path, stderr_path: Path) -> Iterator[None]:
    """Send the process's stdout/stderr (file descriptors 1 and 2, so C code too) to the
    trial's logs, and ``cil_core``'s log records to stderr.log, for the trial's duration."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = (os.dup(1), os.dup(2))
    out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    streams = (sys.stdout, sys.stderr)
    # Python-level writers too (Ray or a test harness may have replaced sys.stdout/stderr)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("cil_core", "orchestrator")]
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in previous:
            lg.removeHandler(handler)
            lg.setLevel(level)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class Heartbeat:
    """Rewrites ``progress.json``'s ``heartbeat`` every few seconds while the trial runs,
    so ``status`` can tell a running trial from one whose process died."""

    def __init__(self, files: TrialFiles, progress: dict[str, Any], every_s: float = HEARTBEAT_S) -> None:
        self.files = files
        self.progress = progress
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orchestrator-heartbeat", daemon=True)

    def beat(self, **update: Any) -> None:
        self.progress.update(update)
        self.progress["heartbeat"] = time.time()
        self.files.write_json(PROGRESS_JSON, self.progress)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(Exception):
                self.beat()
                self.files.sync()

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _failure_kind(exc: BaseException) -> str:
    names = {cls.__name__ for cls in type(exc).__mro__}
    for name, kind in PERMANENT_KINDS.items():
        if name in names:
            return kind
    return "error"


def _report(metrics: dict[str, Any]) -> None:
    from ray import tune

    tune.report(metrics)


# ----------------------------------------------------------------------------- the trainable


def resolve_spec(config: dict[str, Any]) -> TrialSpec:
    """The trial's spec; for a search trial, the base spec with the sampled parameters."""
    spec = TrialSpec.from_json(config["trial"])
    params = config.get("params") or {}
    return sampled_trial(spec, params, config.get("search")) if params else spec


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable (see the module docstring)."""
    spec = resolve_spec(config)
    store = Store(config["store"])
    files = TrialFiles(store, spec.id)
    report = config.get("_report") or _report  # tests call run_trial outside Ray with a list.append
    base_metrics = {"trial_id": spec.id}

    failed = files.read_json(FAILED_JSON)
    if isinstance(failed, dict) and failed.get("permanent"):
        raise PermanentTrialFailure(f"trial {spec.id} failed permanently ({failed.get('kind')}): {failed.get('error')}")

    finished = files.read_json(RESULT_JSON)
    if isinstance(finished, dict) and finished.get("status") == "finished":
        files.sync()  # a scratch copy may be ahead of the store
        files.cleanup()
        report({**base_metrics, **_final_metrics(finished), "restored": True})
        return

    pin_devices(spec)
    files.write_json(TRIAL_JSON, spec.to_json())
    previous = [line for line in (files.path(ATTEMPTS).read_text().splitlines() if files.path(ATTEMPTS).exists() else []) if line.strip()]
    attempt = sum(1 for line in previous if '"event": "start"' in line) + 1
    env = environment_info(spec, config.get("driver") or {})
    env["attempt"] = attempt
    files.write_json(ENV_JSON, env)
    files.append_json_line(ATTEMPTS, {"event": "start", "attempt": attempt, "time": time.time(), "host": env["host"], "pid": os.getpid(), "node_id": env.get("node_id")})

    run_config = {**spec.config, "out": str(files.dir)}
    # Data-loader workers: as many as the CPUs the trial asked for (cil_core's own default is
    # the node's CPU count, up to 8, which oversubscribes a node shared by several trials).
    run_config.setdefault("num_workers", max(1, int(float(spec.resources.get("cpu", 1)))))
    progress: dict[str, Any] = {
        "state": "running",
        "trial": spec.id,
        "attempt": attempt,
        "host": env["host"],
        "pid": os.getpid(),
        "node_id": env.get("node_id"),
        "started": time.time(),
        "task": None,
        "num_tasks": spec.split[1],
    }
    outcome = "stopped"
    with Heartbeat(files, progress) as heartbeat:
        try:
            with redirect_output(files.path(STDOUT), files.path(STDERR)):
                runner = import_runner(config.get("runner") or DEFAULT_RUNNER)

                def on_task(metrics: dict[str, Any]) -> None:
                    heartbeat.beat(
                        task=metrics.get("task"),
                        num_tasks=metrics.get("num_tasks"),
                        metrics={**metrics, "avg_incremental_accuracy": metrics.get("avg_incremental_accuracy_so_far")},
                    )
                    files.sync()
                    if int(metrics.get("task", 0)) >= int(metrics.get("num_tasks") or spec.split[1]) - 1:
                        # The last task's step is the final report below, made once result.json
                        # is written: a scheduler stopping the trial here would lose the result.
                        return
                    report(
                        {
                            **base_metrics,
                            **metrics,
                            "avg_incremental_accuracy": metrics.get("avg_incremental_accuracy_so_far"),
                            "node_id": env.get("node_id"),
                            "final": False,
                        }
                    )

                result = runner(run_config, report=on_task)
            outcome = "finished"
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised for Ray
            kind = _failure_kind(exc)
            outcome = "failed"
            record = {
                "kind": kind,
                "permanent": kind != "error",
                "error": f"{type(exc).__name__}: {exc}".strip(),
                "traceback": traceback.format_exc().splitlines()[-40:],
                "attempt": attempt,
                "time": time.time(),
                "host": env["host"],
                "task": progress.get("task"),
            }
            files.write_json(FAILED_JSON, record)
            heartbeat.beat(state="failed", error=record["error"])
            files.append_json_line(ATTEMPTS, {"event": "end", "attempt": attempt, "time": time.time(), "outcome": f"failed:{kind}", "error": record["error"]})
            files.sync()
            if record["permanent"]:
                raise PermanentTrialFailure(f"trial {spec.id} failed permanently ({kind}): {record['error']}") from exc
            raise
        finally:
            if outcome == "stopped":  # Ray stopped it (early stopping, Ctrl-C): resumable
                with contextlib.suppress(Exception):
                    heartbeat.beat(state="stopped")
                    files.append_json_line(ATTEMPTS, {"event": "end", "attempt": attempt, "time": time.time(), "outcome": "stopped"})
                    files.sync()
        heartbeat.beat(state="finished", task=spec.split[1] - 1)
    files.remove(FAILED_JSON)
    files.append_json_line(ATTEMPTS, {"event": "end", "attempt": attempt, "time": time.time(), "outcome": "finished"})
    files.sync()
    files.cleanup()
    report({**base_metrics, **_final_metrics(result), "restored": False})


def _final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last report: the run's summary, under the same keys as the per-task reports."""
    tasks = len(result.get("acc_seen") or [])
    return {
        "task": tasks - 1,
        "num_tasks": tasks,
        "acc_seen": (result.get("acc_seen") or [None])[-1],
        "task_avg_acc": (result.get("task_avg_acc") or [None])[-1],
        "avg_incremental_accuracy": result.get("avg_incremental_accuracy"),
        "avg_incremental_accuracy_so_far": result.get("avg_incremental_accuracy"),
        "last_accuracy": result.get("last_accuracy"),
        "final": True,
    }
