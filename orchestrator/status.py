"""Each trial's state, read from its files (with or without a running Ray).

States: ``done`` (``result.json`` finished), ``failed`` (``failed.json``; ``permanent``
ones are not retried until ``--retry-failed``), ``running`` (a live process or a fresh
heartbeat), ``stopped`` (stopped by early stopping or an interrupt; resumes from its last
finished task), ``interrupted`` (was running, its process is gone), ``pending`` (never
started).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

from .lock import lock_holder_alive, pid_alive, read_lock
from .store import ATTEMPTS, FAILED_JSON, PROGRESS_JSON, RESULT_JSON, STDERR, SWEEP_JSON, TRIAL_JSON, TRIALS, Store, trial_rel
from .trials import TrialSpec

STALE_HEARTBEAT_S = 180.0
STATES = ("done", "running", "pending", "stopped", "interrupted", "failed")


@dataclass
class TrialStatus:
    spec: TrialSpec
    state: str
    task: int | None = None
    num_tasks: int | None = None
    attempts: int = 0
    error: str | None = None
    failure_kind: str | None = None
    permanent: bool = False
    host: str | None = None
    in_sweep: bool = True
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.id


def load_sweep_meta(store: Store) -> dict[str, Any] | None:
    meta = store.read_json(SWEEP_JSON)
    return meta if isinstance(meta, dict) else None


def sweep_trials(store: Store) -> list[TrialSpec]:
    meta = load_sweep_meta(store) or {}
    return [TrialSpec.from_json(t) for t in meta.get("trials", [])]


def _alive(progress: dict[str, Any]) -> bool:
    heartbeat = float(progress.get("heartbeat") or 0)
    fresh = time.time() - heartbeat < STALE_HEARTBEAT_S
    if progress.get("host") == socket.gethostname() and progress.get("pid"):
        return pid_alive(int(progress["pid"])) and fresh
    return fresh


def is_finished(store: Store, tid: str) -> bool:
    result = store.read_json(trial_rel(tid, RESULT_JSON))
    return isinstance(result, dict) and result.get("status") == "finished"


def finished_ids(store: Store) -> set[str]:
    """The ids of the finished trials in ``store``."""
    return {tid for tid in store.list_dirs(TRIALS) if is_finished(store, tid)}


def trial_status(store: Store, spec: TrialSpec, *, in_sweep: bool = True, tail_lines: int = 0) -> TrialStatus:
    rel = trial_rel(spec.id)
    status = TrialStatus(spec=spec, state="pending", in_sweep=in_sweep, num_tasks=spec.split[1])
    attempts_text = store.read_text(f"{rel}/{ATTEMPTS}") or ""
    status.attempts = attempts_text.count('"event": "start"')
    progress = store.read_json(f"{rel}/{PROGRESS_JSON}") or {}
    if isinstance(progress, dict):
        status.task = progress.get("task")
        status.num_tasks = progress.get("num_tasks") or status.num_tasks
        status.host = progress.get("host")
    if is_finished(store, spec.id):
        status.state = "done"
        status.task = (status.num_tasks or 1) - 1
        return status
    failed = store.read_json(f"{rel}/{FAILED_JSON}")
    running = isinstance(progress, dict) and progress.get("state") == "running"
    if running and _alive(progress):
        status.state = "running"
    elif isinstance(failed, dict):
        status.state = "failed"
        status.error = failed.get("error")
        status.failure_kind = failed.get("kind")
        status.permanent = bool(failed.get("permanent"))
    elif running:
        status.state = "interrupted"
    elif isinstance(progress, dict) and progress.get("state") == "stopped":
        status.state = "stopped"
    if status.state == "failed" and tail_lines:
        status.stderr_tail = store.tail(f"{rel}/{STDERR}", tail_lines)
    return status


def collect(store: Store, *, tail_lines: int = 0, include_extra: bool = True) -> list[TrialStatus]:
    """The sweep's trials (``sweep.json``), then any other trial folder (search trials,
    trials of an earlier version of the sweep)."""
    meta = load_sweep_meta(store) or {}
    searching = bool(meta.get("search"))
    specs = [] if searching else sweep_trials(store)  # a search runs samples, not its base trials
    known = {s.id for s in specs}
    out = [trial_status(store, s, tail_lines=tail_lines) for s in specs]
    if include_extra:
        for tid in store.list_dirs(TRIALS):
            if tid in known:
                continue
            data = store.read_json(trial_rel(tid, TRIAL_JSON))
            if not isinstance(data, dict):
                continue
            try:
                spec = TrialSpec.from_json(data)
            except (KeyError, TypeError):
                continue
            in_sweep = searching and bool(spec.search)
            out.append(trial_status(store, spec, in_sweep=in_sweep, tail_lines=tail_lines))
    return out


def counts(statuses: list[TrialStatus]) -> dict[str, int]:
    out = {state: 0 for state in STATES}
    for s in statuses:
        out[s.state] += 1
    return out


def _task(s: TrialStatus) -> str:
    if s.state == "done":
        return f"{s.num_tasks}/{s.num_tasks}"
    if s.task is None:
        return "-"
    return f"{int(s.task) + 1}/{s.num_tasks}"


def format_status(store: Store, statuses: list[TrialStatus], *, show_all: bool = True) -> str:
    """A table of trials, a summary line, who holds the lock, then each failure's tail."""
    lines: list[str] = []
    meta = load_sweep_meta(store) or {}
    lines.append(f"results: {store.root}" + (f"  (sweep {meta.get('name')}, file {meta.get('sweep_file')})" if meta else ""))
    lock = read_lock(store)
    if lock:
        alive = lock_holder_alive(lock)
        state = {True: "running", False: "not running (stale lock)", None: "on another host"}[alive]
        lines.append(f"orchestrator: pid {lock.get('pid')} on {lock.get('host')}: {state}")
    else:
        lines.append("orchestrator: none running")
    in_sweep = [s for s in statuses if s.in_sweep]
    extra = [s for s in statuses if not s.in_sweep]
    c = counts(in_sweep)
    stopped = "stopped early" if meta.get("search") else "stopped"
    lines.append(
        f"{len(in_sweep)} trials: {c['done']} done, {c['running']} running, {c['pending']} pending, "
        f"{c['stopped']} {stopped}, {c['interrupted']} interrupted, {c['failed']} failed"
        + (f"; {len(extra)} other trial folders (other searches, earlier versions of the sweep)" if extra else "")
    )
    if c["stopped"] + c["interrupted"] and not meta.get("search"):
        lines.append("(stopped and interrupted trials continue from their last finished task when the sweep runs again)")
    rows = statuses if show_all else [s for s in statuses if s.state != "done"]
    if rows:
        width = max(len(s.id) for s in rows)
        lines.append("")
        lines.append(f"{'trial':<{width}}  {'state':<11}  {'task':>7}  {'tries':>5}  note")
        for s in rows:
            note = ""
            if s.state == "failed":
                note = f"{'permanent ' if s.permanent else ''}{s.failure_kind or ''}: {s.error or ''}"
            elif s.state == "running" and s.host:
                note = f"on {s.host}"
            if not s.in_sweep:
                note = (note + " " if note else "") + ("[search]" if s.spec.search else "[not in sweep.json]")
            lines.append(f"{s.id:<{width}}  {s.state:<11}  {_task(s):>7}  {s.attempts:>5}  {note}".rstrip())
    failures = [s for s in statuses if s.state == "failed"]
    for s in failures:
        lines.append("")
        lines.append(f"--- {s.id} failed ({'permanent, ' if s.permanent else ''}{s.failure_kind}): {s.error}")
        lines.append(f"    config: {compact_config(s.spec.config)}")
        for line in s.stderr_tail:
            lines.append(f"    | {line}")
    return "\n".join(lines)


def compact_config(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items() if k not in ("out",))
