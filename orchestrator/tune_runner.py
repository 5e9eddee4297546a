"""Run a sweep's trials with Ray Tune: skip what is finished, run the rest, report progress.

Resumption is the orchestrator's own, by trial id, because ``Tuner.restore`` cannot change
a search space: before each run the trials whose ``result.json`` is finished are skipped
(and those that failed permanently, unless ``--retry-failed``), and a new Tuner runs the
rest; an unfinished trial continues from its last finished task because ``cil_core``
resumes from the checkpoints in its folder. ``Tuner.restore`` is used only to continue an
interrupted *search*, whose searcher state (Optuna's study, ASHA's rungs) lives in Ray's
experiment state.

Each trial asks Tune for its own resources (``tune.with_resources``, one placement group
per trial), so trials share a GPU only when the sweep asks for fractions.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from . import cluster, schema
from .status import TrialStatus, collect, is_finished, trial_status
from .store import FAILED_JSON, RAY, SWEEP_JSON, Store, trial_rel
from .trials import TrialSpec, search_group_id
from .trainable import DEFAULT_RUNNER, git_revision, resolve_spec, run_trial

log = logging.getLogger("orchestrator")


@dataclass
class RunOptions:
    store: Store
    where: str = "<sweep>"  # the sweep file, for messages
    address: str | None = None
    max_failures: int = 2
    retry_failed: bool = False
    runner: str = DEFAULT_RUNNER
    resource_check: bool = True
    num_cpus: int | None = None
    num_gpus: int | None = None
    progress_every_s: float = 15.0
    only_ids: set[str] | None = None  # --only: run just these; the rest stay in sweep.json


@dataclass
class RunOutcome:
    statuses: list[TrialStatus] = field(default_factory=list)
    ran: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    cluster: str = ""
    incomplete_searches: list[str] = field(default_factory=list)

    @property
    def unfinished(self) -> list[TrialStatus]:
        return [s for s in self.statuses if s.state != "done"]


def write_sweep_meta(store: Store, sweep: schema.Sweep, trials: list[TrialSpec], where: str, text: str | None = None) -> None:
    from .sweep import sweep_fingerprint

    store.write_json(
        SWEEP_JSON,
        {
            "schema_version": 1,
            "name": sweep.name,
            "description": sweep.description,
            "sweep_file": os.path.abspath(where) if os.path.exists(where) else where,
            "sweep_sha": sweep_fingerprint(text) if text else None,
            "written": time.time(),
            "report": sweep.report.model_dump(mode="json"),
            "search": sweep.search.model_dump(mode="json") if sweep.search else None,
            "trials": [t.to_json() for t in trials],
        },
    )


def plan(store: Store, trials: list[TrialSpec], *, retry_failed: bool) -> tuple[list[TrialSpec], int, int]:
    """``(to_run, finished, permanently_failed)``: what a run has left to do."""
    to_run: list[TrialSpec] = []
    done = failed = 0
    seen: set[str] = set()
    for spec in trials:
        if spec.id in seen:
            continue
        seen.add(spec.id)
        if is_finished(store, spec.id):
            done += 1
            continue
        record = store.read_json(trial_rel(spec.id, FAILED_JSON))
        if isinstance(record, dict) and record.get("permanent"):
            if not retry_failed:
                failed += 1
                continue
            store.delete(trial_rel(spec.id, FAILED_JSON))
        to_run.append(spec)
    return to_run, done, failed


def _driver_info(sweep: schema.Sweep) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "sweep": sweep.name, "git": git_revision()}


def _placement(config: dict[str, Any]) -> Any:
    from ray import tune

    res = config["trial"]["resources"]
    bundle: dict[str, float] = {"CPU": float(res.get("cpu", 1))}
    if float(res.get("gpu", 0) or 0) > 0:
        bundle["GPU"] = float(res["gpu"])
    return tune.PlacementGroupFactory([bundle])


def _trial_name(trial: Any) -> str:
    return resolve_spec(trial.config).id


# ----------------------------------------------------------------------------- progress


def _progress_callback(total: int, done_before: int, failed_before: int, every_s: float) -> Any:
    from ray import tune

    class Progress(tune.Callback):
        """Logs a line when a trial starts, finishes or fails, and a summary every few
        seconds: done / running / pending / failed, and the current task of each running trial."""

        def __init__(self) -> None:
            self.done = done_before
            self.failed = failed_before
            self.stopped = 0
            self.running: dict[str, dict[str, Any]] = {}
            self.last_line = 0.0
            self.final: set[str] = set()

        def _id(self, trial: Any) -> str:
            try:
                return _trial_name(trial)
            except Exception:  # noqa: BLE001
                return str(trial)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = self._id(trial)
            self.running[tid] = {"task": None, "num_tasks": None}
            log.info("start   %s", tid)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            tid = self._id(trial)
            state = self.running.setdefault(tid, {})
            state.update(task=result.get("task"), num_tasks=result.get("num_tasks"))
            if result.get("final"):
                self.final.add(tid)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = self._id(trial)
            self.running.pop(tid, None)
            if tid in self.final:
                self.done += 1
                log.info("done    %s  (%d/%d done)", tid, self.done, total)
            else:
                self.stopped += 1
                log.info("stopped %s (early stopping; resumable)", tid)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = self._id(trial)
            self.running.pop(tid, None)
            log.warning("retry   %s (attempt failed: see trials/%s/failed.json)", tid, tid)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            tid = self._id(trial)
            self.running.pop(tid, None)
            self.failed += 1
            log.error("FAILED  %s (see trials/%s/failed.json, stderr.log)", tid, tid)
            self.summary(force=True)

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            self.summary()

        def summary(self, force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - self.last_line < every_s:
                return
            self.last_line = now
            pending = max(0, total - self.done - self.failed - self.stopped - len(self.running))
            parts = []
            for tid, state in sorted(self.running.items()):
                task = state.get("task")
                parts.append(f"{tid} task {int(task) + 1}/{state.get('num_tasks')}" if task is not None else f"{tid} starting")
            log.info(
                "progress: %d/%d done, %d running, %d pending, %d failed%s%s",
                self.done,
                total,
                len(self.running),
                pending,
                self.failed,
                f", {self.stopped} stopped" if self.stopped else "",
                (" | " + "; ".join(parts)) if parts else "",
            )

    return Progress()


# ----------------------------------------------------------------------------- grid


def _run_grid(to_run: list[TrialSpec], sweep: schema.Sweep, opts: RunOptions, total: int, done: int, failed: int) -> None:
    from ray import tune

    trainable = tune.with_resources(run_trial, resources=_placement)
    param_space = {
        "trial": tune.grid_search([t.to_json() for t in to_run]),
        "store": opts.store.root,
        "runner": opts.runner,
        "driver": _driver_info(sweep),
    }
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            reuse_actors=sweep.tune.reuse_actors,
            max_concurrent_trials=sweep.tune.max_concurrent_trials,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=opts.store.uri(RAY),
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            verbose=0,
            callbacks=[_progress_callback(total, done, failed, opts.progress_every_s)],
        ),
    )
    tuner.fit()


# ----------------------------------------------------------------------------- search


def _distribution(dist: schema.Distribution) -> Any:
    from ray import tune

    args = dist.args
    return {
        "uniform": lambda: tune.uniform(args[0], args[1]),
        "loguniform": lambda: tune.loguniform(args[0], args[1]),
        "quniform": lambda: tune.quniform(args[0], args[1], args[2]),
        "qloguniform": lambda: tune.qloguniform(args[0], args[1], args[2]),
        "randint": lambda: tune.randint(int(args[0]), int(args[1])),
        "choice": lambda: tune.choice(list(args)),
    }[dist.kind]()


def search_summary_name(group: str) -> str:
    return f"{group}.json"


def _run_search(base: TrialSpec, sweep: schema.Sweep, opts: RunOptions) -> bool:
    """Run (or continue) one search; True when all its samples reached an end."""
    import warnings

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    search = sweep.search
    assert search is not None
    group = search_group_id(base, search)
    summary = opts.store.read_json(search_summary_name(group))
    if isinstance(summary, dict) and summary.get("finished"):
        log.info("search %s: finished earlier (%d trials); skipped", group, len(summary.get("trials", [])))
        return True
    # a continued search re-reports the tasks its trials restore from checkpoints
    warnings.filterwarnings("ignore", message="The reported value is ignored because this `step")
    trainable = tune.with_resources(run_trial, resources=_placement)
    path = opts.store.uri(RAY, group)
    callbacks = [_progress_callback(search.num_samples, 0, 0, opts.progress_every_s)]
    if tune.Tuner.can_restore(path):
        log.info("search %s: continuing the interrupted search from %s", group, path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if search.searcher == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search_alg: Any = OptunaSearch(seed=search.seed)
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            search_alg = BasicVariantGenerator(random_state=search.seed)
        scheduler = None
        if search.early_stopping is not None:
            es = search.early_stopping
            # one time step per finished task (the last one is the final summary report)
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=es.max_t or base.split[1],
                grace_period=es.grace_period,
                reduction_factor=es.reduction_factor,
            )
        tuner = tune.Tuner(
            trainable,
            param_space={
                "trial": base.to_json(),
                "search": group,
                "params": {key: _distribution(dist) for key, dist in search.space.items()},
                "store": opts.store.root,
                "runner": opts.runner,
                "driver": _driver_info(sweep),
            },
            tune_config=tune.TuneConfig(
                metric=search.metric,
                mode=search.mode,
                num_samples=search.num_samples,
                search_alg=search_alg,
                scheduler=scheduler,
                max_concurrent_trials=search.max_concurrent or sweep.tune.max_concurrent_trials,
                reuse_actors=sweep.tune.reuse_actors,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=group,
                storage_path=opts.store.uri(RAY),
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                verbose=0,
                callbacks=callbacks,
            ),
        )
    grid = tuner.fit()
    records = []
    complete = True
    for result in grid:
        config = result.config or {}
        try:
            spec = resolve_spec(config)
        except (KeyError, TypeError):
            continue
        status = trial_status(opts.store, spec)
        if status.state not in ("done", "stopped", "failed"):
            complete = False
        metrics = result.metrics or {}
        records.append(
            {
                "id": spec.id,
                "params": spec.params,
                "state": status.state,
                "metric": metrics.get(search.metric),
                "task": metrics.get("task"),
            }
        )
    complete = complete and len(records) >= search.num_samples
    opts.store.write_json(
        search_summary_name(group),
        {
            "group": group,
            "base": base.to_json(),
            "search": search.model_dump(mode="json"),
            "finished": complete,
            "trials": records,
        },
    )
    stopped = sum(1 for r in records if r["state"] == "stopped")
    log.info("search %s: %s, %d trials (%d stopped early)", group, "finished" if complete else "NOT finished (interrupted?)", len(records), stopped)
    return complete


# ----------------------------------------------------------------------------- entry point


def run_sweep(sweep: schema.Sweep, trials: list[TrialSpec], opts: RunOptions, *, sweep_text: str | None = None) -> RunOutcome:
    """Run what is missing of ``trials``; return every trial's state read from its files."""
    store = opts.store
    store.mkdir("")
    write_sweep_meta(store, sweep, trials, opts.where, sweep_text)
    outcome = RunOutcome()
    if sweep.search is None:
        in_slice = trials if opts.only_ids is None else [t for t in trials if t.id in opts.only_ids]
        to_run, outcome.skipped_done, outcome.skipped_failed = plan(store, in_slice, retry_failed=opts.retry_failed)
        unique = len({t.id for t in in_slice})
        plan_line = (
            f"{unique} trials: {outcome.skipped_done} finished earlier (skipped), {outcome.skipped_failed} failed "
            f"permanently (skipped; --retry-failed runs them), {len(to_run)} to run"
        )
        if opts.only_ids is not None:
            plan_line += f"; {len({t.id for t in trials}) - unique} outside --only left for later"
    else:
        to_run = list(trials)
        plan_line = f"search: {len(trials)} base trial(s) x {sweep.search.num_samples} samples"
    if not to_run:
        log.info("%s", plan_line)
    else:
        # Join or start Ray first: a cluster that cannot be reached is bad input, said alone.
        info = cluster.connect(opts.address, num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)
        try:
            outcome.cluster = info.describe()
            if opts.resource_check:
                cluster.check_resources(to_run, info.nodes, opts.where)
            log.info("%s", plan_line)
            log.info("%s", outcome.cluster)
            if sweep.search is None:
                _run_grid(to_run, sweep, opts, unique, outcome.skipped_done, outcome.skipped_failed)
            else:
                for base in to_run:
                    if not _run_search(base, sweep, opts):
                        outcome.incomplete_searches.append(search_group_id(base, sweep.search))
            outcome.ran = len(to_run)
        finally:
            cluster.shutdown()
    outcome.statuses = [s for s in collect(store, tail_lines=15, include_extra=sweep.search is not None) if s.in_sweep]
    return outcome
