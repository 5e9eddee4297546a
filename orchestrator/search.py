"""Hyperparameter search: one Tune search (Optuna or random, ASHA early stopping) per base trial.

Kept apart from the grid (:mod:`orchestrator.tune_runner`): a search's samples are trials
like any other (their ids are the fingerprints of the base trial's options plus the sampled
ones, resolved by ``cil_core``), but an interrupted search continues with
``Tuner.restore``, because its searcher state (Optuna's study, ASHA's rungs) lives in
Ray's experiment state. ``search_<group>.json`` records each sample's state and metric.
"""

from __future__ import annotations

import logging
from typing import Any

from . import schema
from .status import trial_status
from .store import RAY
from .trials import TrialSpec, search_group_id
from .trainable import resolve_spec, run_trial
from .tune_runner import RunOptions, placement, reporting, trial_name

log = logging.getLogger("orchestrator")


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


def run_search(base: TrialSpec, sweep: schema.Sweep, opts: RunOptions) -> bool:
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
    trainable = tune.with_resources(run_trial, resources=placement)
    path = opts.store.uri(RAY, group)
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
            },
            tune_config=tune.TuneConfig(
                metric=search.metric,
                mode=search.mode,
                num_samples=search.num_samples,
                search_alg=search_alg,
                scheduler=scheduler,
                max_concurrent_trials=search.max_concurrent or sweep.tune.max_concurrent_trials,
                reuse_actors=sweep.tune.reuse_actors,
                trial_name_creator=trial_name,
                trial_dirname_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=group,
                storage_path=opts.store.uri(RAY),
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                **reporting(opts),
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
