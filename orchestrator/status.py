"""Each trial's state, read from a few file facts (Ray need not run).

``done``: ``result.json`` finished. ``failed``: ``failed.json`` (``permanent`` ones are not
retried until ``--retry-failed``). An attempt that started and never ended (``attempts.jsonl``)
is ``running`` while an orchestrator holds the results folder's lock, else ``interrupted``.
``stopped``: stopped by early stopping or an interrupt. Those three resume from their last
finished task, the highest ``checkpoints/task_NNN.pt``. ``pending``: never started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .lock import lock_holder_alive, read_lock
from .store import ATTEMPTS, FAILED_JSON, RESULT_JSON, STDERR, SWEEP_JSON, TRIAL_JSON, TRIALS, Store, trial_rel
from .trials import TrialSpec

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


def is_finished(store: Store, tid: str) -> bool:
    result = store.read_json(trial_rel(tid, RESULT_JSON))
    return isinstance(result, dict) and result.get("status") == "finished"


def finished_ids(store: Store) -> set[str]:
    """The ids of the finished trials in ``store``."""
    return {tid for tid in store.list_dirs(TRIALS) if is_finished(store, tid)}


def trial_status(store: Store, spec: TrialSpec, *, in_sweep: bool = True, tail_lines: int = 0, orchestrator_alive: bool | None = None) -> TrialStatus:
    rel = trial_rel(spec.id)
    status = TrialStatus(spec=spec, state="pending", in_sweep=in_sweep, num_tasks=spec.split[1])
    if is_finished(store, spec.id):
        status.state, status.task = "done", spec.split[1] - 1
        return status
    events = []
    for line in (store.read_text(f"{rel}/{ATTEMPTS}") or "").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a torn last line
    starts = [e for e in events if e.get("event") == "start"]
    status.attempts = len(starts)
    status.host = starts[-1].get("host") if starts else None
    tasks = [int(name[5:8]) for name in store.list_dirs(f"{rel}/checkpoints", files=True) if name.startswith("task_") and name.endswith(".pt")]
    status.task = max(tasks) if tasks else None
    failed = store.read_json(f"{rel}/{FAILED_JSON}")
    if events and events[-1].get("event") == "start":
        if orchestrator_alive is None:
            orchestrator_alive = bool(lock_holder_alive(read_lock(store)))
        status.state = "running" if orchestrator_alive else "interrupted"
    elif isinstance(failed, dict):
        status.state = "failed"
        status.error, status.failure_kind, status.permanent = failed.get("error"), failed.get("kind"), bool(failed.get("permanent"))
        status.task = failed.get("task", status.task)
        if tail_lines:
            status.stderr_tail = store.tail(f"{rel}/{STDERR}", tail_lines)
    elif events and events[-1].get("outcome") == "stopped":
        status.state = "stopped"
    return status


def collect(store: Store, *, tail_lines: int = 0, include_extra: bool = True) -> list[TrialStatus]:
    """The sweep's trials (``sweep.json``), then any other trial folder (search trials,
    trials of an earlier version of the sweep)."""
    meta = load_sweep_meta(store) or {}
    searching = bool(meta.get("search"))
    alive = bool(lock_holder_alive(read_lock(store)))
    specs = [] if searching else sweep_trials(store)  # a search runs samples, not its base trials
    known = {s.id for s in specs}
    out = [trial_status(store, s, tail_lines=tail_lines, orchestrator_alive=alive) for s in specs]
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
            out.append(trial_status(store, spec, in_sweep=searching and bool(spec.search), tail_lines=tail_lines, orchestrator_alive=alive))
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
