"""Each trial's state, read from a few file facts (Ray need not run).

``done``: ``result.json`` finished. ``failed``: ``failed.json`` (``permanent`` ones are not
retried until ``--retry-failed``). An attempt that started and never ended (``attempts.jsonl``)
is ``running`` while an orchestrator holds the results folder's lock, else ``interrupted``.
``stopped``: stopped by early stopping or an interrupt. Those three resume from their last
finished task, the highest ``checkpoints/task_NNN.pt``. ``pending``: never started.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .lock import lock_holder_alive, read_lock
from .store import ATTEMPTS, FAILED_JSON, RESULT_JSON, STDERR, SWEEP_JSON, TRIAL_JSON, TRIALS, Store, trial_rel
from .trials import TrialSpec


@dataclass
class TrialStatus:
    spec: TrialSpec
    state: str
    task: int | None = None  # the last finished one (0-based)
    attempts: int = 0
    error: str | None = None
    failure_kind: str | None = None
    permanent: bool = False
    host: str | None = None
    in_sweep: bool = True
    stderr_tail: list[str] = field(default_factory=list)

    id = property(lambda self: self.spec.id)


def load_sweep_meta(store: Store) -> dict[str, Any]:
    """``sweep.json``, or ``{}`` where no run wrote one (a folder of trials only)."""
    meta = store.read_json(SWEEP_JSON)
    return meta if isinstance(meta, dict) else {}


def sweep_trials(store: Store) -> list[TrialSpec]:
    return [TrialSpec.from_json(t) for t in load_sweep_meta(store).get("trials", [])]


def folder_trials(store: Store) -> list[TrialSpec]:
    """Every trial folder's ``trial.json`` (search samples, trials of earlier versions of the sweep)."""
    found = (store.read_json(trial_rel(tid, TRIAL_JSON)) for tid in store.list_dirs(TRIALS))
    return [TrialSpec.from_json(d) for d in found if isinstance(d, dict) and isinstance(d.get("config"), dict)]


def finished_result(store: Store, tid: str) -> dict[str, Any] | None:
    """The trial's ``result.json`` once it finished, else ``None`` (the one test of "done")."""
    result = store.read_json(trial_rel(tid, RESULT_JSON))
    return result if isinstance(result, dict) and result.get("status") == "finished" else None


def trial_status(store: Store, spec: TrialSpec, *, in_sweep: bool = True, tail_lines: int = 0,
                 orchestrator_alive: bool | None = None) -> TrialStatus:
    rel = trial_rel(spec.id)
    status = TrialStatus(spec=spec, state="pending", in_sweep=in_sweep)
    if finished_result(store, spec.id):
        status.state, status.task = "done", spec.split[1] - 1
        return status
    events = []
    for line in (store.read_text(f"{rel}/{ATTEMPTS}") or "").splitlines():
        with contextlib.suppress(ValueError):  # a torn last line
            events.append(json.loads(line))
    starts = [e for e in events if e.get("event") == "start"]
    status.attempts, status.host = len(starts), starts[-1].get("host") if starts else None
    names = store.list_dirs(f"{rel}/checkpoints", files=True)
    status.task = max((int(n[5:8]) for n in names if re.fullmatch(r"task_\d{3}\.pt", n)), default=None)
    failed = store.read_json(f"{rel}/{FAILED_JSON}")
    if events and events[-1].get("event") == "start":
        if orchestrator_alive is None:
            orchestrator_alive = bool(lock_holder_alive(read_lock(store)))
        status.state = "running" if orchestrator_alive else "interrupted"
    elif isinstance(failed, dict):
        status.state, status.error, status.failure_kind = "failed", failed.get("error"), failed.get("kind")
        status.permanent, status.task = bool(failed.get("permanent")), failed.get("task", status.task)
        status.stderr_tail = store.tail(f"{rel}/{STDERR}", tail_lines) if tail_lines else []
    elif events and events[-1].get("outcome") == "stopped":
        status.state = "stopped"
    return status


def collect(store: Store, *, tail_lines: int = 0, include_extra: bool = True) -> list[TrialStatus]:
    """The sweep's trials (``sweep.json``), then every other trial folder (search samples, earlier sweeps)."""
    searching = bool(load_sweep_meta(store).get("search"))
    alive = bool(lock_holder_alive(read_lock(store)))
    specs = [] if searching else sweep_trials(store)  # a search runs samples, not its base trials
    known = {s.id for s in specs}
    specs += [s for s in folder_trials(store) if s.id not in known] if include_extra else []
    return [trial_status(store, s, in_sweep=s.id in known or (searching and bool(s.search)), tail_lines=tail_lines,
                         orchestrator_alive=alive) for s in specs]


def failure_lines(s: TrialStatus, indent: str = "    ", tail: int | None = None) -> list[str]:
    """A failed trial's config and the last ``tail`` lines of its stderr (default: those read)."""
    config = " ".join(f"{k}={v}" for k, v in s.spec.config.items() if k != "out")
    return [f"{indent}config: {config}"] + [f"{indent}| {line}" for line in s.stderr_tail[-(tail or 0):]]


def format_status(store: Store, statuses: list[TrialStatus], *, show_all: bool = True) -> str:
    """A table of trials, a summary line, who holds the lock, then each failure's tail."""
    meta, lock = load_sweep_meta(store), read_lock(store)
    lines = [f"results: {store.root}" + (f"  (sweep {meta['name']}, file {meta.get('sweep_file')})" if meta else "")]
    state = {True: "running", False: "not running (stale lock)", None: "on another host"}[lock_holder_alive(lock)]
    lines.append(f"orchestrator: pid {lock.get('pid')} on {lock.get('host')}: {state}" if lock else
                 "orchestrator: none running")
    extra, c = sum(not s.in_sweep for s in statuses), Counter(s.state for s in statuses if s.in_sweep)
    others = f"; {extra} other trial folders (other searches, earlier versions of the sweep)" if extra else ""
    lines.append(f"{len(statuses) - extra} trials: {c['done']} done, {c['running']} running, {c['pending']} pending, "
                 f"{c['stopped']} {'stopped early' if meta.get('search') else 'stopped'}, {c['interrupted']} "
                 f"interrupted, {c['failed']} failed{others}")
    if c["stopped"] + c["interrupted"] and not meta.get("search"):
        lines.append("(stopped and interrupted trials continue from their last finished task when the sweep runs "
                     "again)")
    rows = statuses if show_all else [s for s in statuses if s.state != "done"]
    width = max((len(s.id) for s in rows), default=0)
    if rows:
        lines += ["", f"{'trial':<{width}}  {'state':<11}  {'task':>7}  {'tries':>5}  note"]
    for s in rows:
        notes = [f"{'permanent ' if s.permanent else ''}{s.failure_kind or ''}: {s.error or ''}"
                 if s.state == "failed" else f"on {s.host}" if s.state == "running" and s.host else ""]
        notes += [] if s.in_sweep else ["[search]" if s.spec.search else "[not in sweep.json]"]
        task = "-" if s.task is None else f"{int(s.task) + 1}/{s.spec.split[1]}"
        note = " ".join(filter(None, notes))
        lines.append(f"{s.id:<{width}}  {s.state:<11}  {task:>7}  {s.attempts:>5}  {note}".rstrip())
    for s in (s for s in statuses if s.state == "failed"):
        lines += ["", f"--- {s.id} failed ({'permanent, ' if s.permanent else ''}{s.failure_kind}): {s.error}"]
        lines += failure_lines(s)
    return "\n".join(lines)
