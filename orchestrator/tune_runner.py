"""Run a sweep's trials with Ray Tune: skip what is finished, run the rest, report progress.

Resumption is by trial id, because ``Tuner.restore`` cannot change a search space: finished
trials (and permanent failures, unless ``--retry-failed``) are skipped and a new Tuner runs the
rest; ``cil_core`` continues an unfinished one from its checkpoints. Ray owns the rest: a
placement group per trial, retries (``FailureConfig``), storage (``RunConfig(storage_path=...)``)
and the progress table (``CLIReporter``). Searches live in :mod:`orchestrator.search`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import cluster, schema
from .status import TrialStatus, collect, finished_result
from .store import FAILED_JSON, RAY, SWEEP_JSON, Store, trial_rel
from .trials import TrialSpec, search_group_id
from .trainable import resolve_spec, run_trial

log = logging.getLogger("orchestrator")


@dataclass
class RunOptions:
    store: Store
    where: str = "<sweep>"  # the sweep file, for messages
    address: str | None = None
    max_failures: int = 2
    retry_failed: bool = False
    runner: str | None = None  # MODULE:FUNCTION replacing the trainable's DEFAULT_RUNNER (tests)
    resource_check: bool = True
    num_cpus: int | None = None
    num_gpus: int | None = None
    only_ids: set[str] | None = None  # --only: run just these; the rest stay in sweep.json
    quiet: bool = False


def write_sweep_meta(store: Store, sweep: schema.Sweep, trials: list[TrialSpec], where: str,
                     text: str | None = None) -> None:
    """``sweep.json``: the expanded trials of the last run and its report settings (status and report read it)."""
    store.write_json(SWEEP_JSON, {
        "schema_version": 1, "name": sweep.name, "description": sweep.description,
        "sweep_file": os.path.abspath(where) if os.path.exists(where) else where,
        "sweep_sha": hashlib.sha256(text.encode()).hexdigest()[:16] if text else None, "written": time.time(),
        "report": sweep.report.model_dump(mode="json"),
        "search": sweep.search.model_dump(mode="json") if sweep.search else None,
        "trials": [t.to_json() for t in trials]})


def placement(config: dict[str, Any]) -> Any:
    from ray import tune

    res = config["trial"]["resources"]
    gpu = float(res.get("gpu", 0) or 0)
    return tune.PlacementGroupFactory([{"CPU": float(res.get("cpu", 1)), **({"GPU": gpu} if gpu > 0 else {})}])


def trial_name(trial: Any) -> str:
    return resolve_spec(trial.config).id


def make_tuner(sweep: schema.Sweep, opts: RunOptions, name: str, space: dict[str, Any], **tune_config: Any) -> Any:
    """The one ``tune.Tuner`` of a grid and of a search (``space`` joins its param space, ``tune_config`` its
    ``TuneConfig``); progress goes to stderr, one line per trial event to the orchestrator's log."""
    from ray import tune

    class TrialEvents(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.info("start   %s", trial_name(trial))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            final = (trial.last_result or {}).get("final")
            log.info("done    %s" if final else "stopped %s (early stopping; resumable)", trial_name(trial))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.warning("retry   %s (attempt failed: see trials/%s/failed.json)", *[trial_name(trial)] * 2)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            log.error("FAILED  %s (see trials/%s/failed.json, stderr.log)", *[trial_name(trial)] * 2)

    class StderrReporter(tune.CLIReporter):  # stdout is for the tables
        def report(self, trials: list, done: bool, *sys_info: Any) -> None:
            print(self._progress_str(trials, done, *sys_info), file=sys.stderr, flush=True)

    reporter = StderrReporter(metric_columns={"task": "task", "avg_incremental_accuracy": "avg inc acc"},
                              parameter_columns=[], max_report_frequency=15,
                              print_intermediate_tables=False)
    if "metric" in tune_config:
        reporter.add_metric_column(tune_config["metric"])
    tune_config.setdefault("max_concurrent_trials", sweep.tune.max_concurrent_trials)
    return tune.Tuner(
        tune.with_resources(run_trial, resources=placement),
        param_space={"store": opts.store.root, "runner": opts.runner, **space},
        tune_config=tune.TuneConfig(reuse_actors=sweep.tune.reuse_actors, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name, **tune_config),
        run_config=tune.RunConfig(name=name, storage_path=opts.store.uri(RAY), callbacks=[TrialEvents()],
                                  failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                                  progress_reporter=reporter, verbose=0 if opts.quiet else 1))


def run_sweep(sweep: schema.Sweep, trials: list[TrialSpec], opts: RunOptions, *,
              sweep_text: str | None = None) -> tuple[list[TrialStatus], list[str]]:
    """Run what is missing of ``trials``; return every trial's state (from its files) and the unfinished searches."""
    from .search import run_search

    store = opts.store
    write_sweep_meta(store, sweep, trials, opts.where, sweep_text)  # makes the folder
    incomplete: list[str] = []
    if sweep.search is None:
        in_slice = {t.id: t for t in trials if opts.only_ids is None or t.id in opts.only_ids}
        done = [tid for tid in in_slice if finished_result(store, tid)]
        failed = [tid for tid in in_slice
                  if tid not in done and (store.read_json(trial_rel(tid, FAILED_JSON)) or {}).get("permanent")]
        for tid in failed if opts.retry_failed else []:
            store.delete(trial_rel(tid, FAILED_JSON))
        skipped = set(done) | (set() if opts.retry_failed else set(failed))
        to_run = [t for tid, t in in_slice.items() if tid not in skipped]
        plan_line = (f"{len(in_slice)} trials: {len(done)} finished earlier (skipped), {len(skipped) - len(done)} "
                     f"failed permanently (skipped; --retry-failed runs them), {len(to_run)} to run")
        if opts.only_ids is not None:
            plan_line += f"; {len({t.id for t in trials}) - len(in_slice)} outside --only left for later"
    else:
        to_run = list(trials)
        plan_line = f"search: {len(trials)} base trial(s) x {sweep.search.num_samples} samples"
    if to_run:
        # Join or start Ray first: a cluster that cannot be reached is bad input, said alone.
        info = cluster.connect(opts.address, num_cpus=opts.num_cpus, num_gpus=opts.num_gpus)
        try:
            if opts.resource_check:
                cluster.check_resources(to_run, info.nodes, opts.where)
            log.info("%s", plan_line)
            log.info("%s", info.describe())
            if sweep.search is None:
                from ray import tune

                space = {"trial": tune.grid_search([t.to_json() for t in to_run])}
                make_tuner(sweep, opts, f"grid-{time.strftime('%Y%m%d-%H%M%S')}", space).fit()
            for base in to_run if sweep.search is not None else []:
                if not run_search(base, sweep, opts):
                    incomplete.append(search_group_id(base, sweep.search))
        finally:
            cluster.shutdown()
    else:
        log.info("%s", plan_line)
    return [s for s in collect(store, tail_lines=15, include_extra=sweep.search is not None) if s.in_sweep], incomplete
