"""Hyperparameter search: select on validation, then evaluate on test.

One Tune search (Optuna or random, ASHA early stopping) per base trial. Its samples are
trials like any other (ids: the fingerprints of the base's options plus the sampled ones),
but Tune sees only their validation figures (``trainable.run_trial``'s reports): the searcher
and ASHA cannot select on test data. An interrupted search continues with
``Tuner.restore``, because its searcher state (Optuna's study, ASHA's rungs) lives in Ray's
experiment state; a finished one is recorded in ``search_<group>.json`` and not run again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import pandas as pd

from . import schema
from .errors import SweepError
from .status import finished_result, folder_trials, load_sweep_meta, trial_status
from .store import RAY, Store
from .tables import md_table
from .trainable import resolve_spec, run_trial
from .trials import TrialSpec, sampled_trial, search_group_id
from .tune_runner import RunOptions, make_tuner, placement

log = logging.getLogger("orchestrator")
EVALUATE = "evaluate"  # evaluate-best's results folder, inside the search's


def run_search(base: TrialSpec, sweep: schema.Sweep, opts: RunOptions) -> bool:
    """Run (or continue) one search; True when all its samples reached an end."""
    import warnings

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    assert (search := sweep.search) is not None
    group = search_group_id(base, search)
    summary = opts.store.read_json(f"{group}.json")
    if isinstance(summary, dict) and summary.get("finished"):
        log.info("search %s: finished earlier (%d trials); skipped", group, len(summary.get("trials", [])))
        return True
    # a continued search re-reports the tasks its trials restore from checkpoints
    warnings.filterwarnings("ignore", message="The reported value is ignored because this `step")
    path = opts.store.uri(RAY, group)
    if tune.Tuner.can_restore(path):
        log.info("search %s: continuing the interrupted search from %s", group, path)
        trainable = tune.with_resources(run_trial, resources=placement)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        search_alg = (OptunaSearch(seed=search.seed) if search.searcher == "optuna"
                      else BasicVariantGenerator(random_state=search.seed))
        es = search.early_stopping  # ASHA: one time step per finished task
        scheduler = None if es is None else ASHAScheduler(
            time_attr="training_iteration", max_t=es.max_t or base.split[1], grace_period=es.grace_period,
            reduction_factor=es.reduction_factor)
        space = {key: tune.choice(dist.args) if dist.kind == "choice" else getattr(tune, dist.kind)(*dist.args)
                 for key, dist in search.space.items()}
        tuner = make_tuner(  # without test_selection the trials report validation figures only
            sweep, opts, group, {"trial": base.to_json(), "search": group, "params": space,
                                 "test_selection": search.allow_test_selection}, metric=search.metric,
            mode=search.mode, num_samples=search.num_samples, search_alg=search_alg, scheduler=scheduler,
            max_concurrent_trials=search.max_concurrent or sweep.tune.max_concurrent_trials)
    grid, records = tuner.fit(), []
    for result in grid:
        try:
            spec = resolve_spec(result.config or {})
        except (KeyError, TypeError):
            continue
        metrics = result.metrics or {}
        records.append({"id": spec.id, "params": spec.params, "state": trial_status(opts.store, spec).state,
                        "metric": metrics.get(search.metric), "task": metrics.get("task")})
    # Tune's own states: a trial stopped by Ctrl-C is left RUNNING (restored later), one stopped by ASHA is TERMINATED
    complete = grid.num_terminated + grid.num_errors >= search.num_samples
    opts.store.write_json(f"{group}.json", {"group": group, "base": base.to_json(), "finished": complete,
                                            "search": search.model_dump(mode="json"), "trials": records})
    log.info("search %s: %s, %d trials (%d stopped early)", group, "finished" if complete else
             "NOT finished (interrupted?)", len(records), sum(1 for r in records if r["state"] == "stopped"))
    return complete


def _figure(result: dict[str, Any], key: str) -> float | None:
    """A summary figure of ``result.json``: the run's value, or a per-task series' last one."""
    value = result.get(key)
    value = value[-1] if isinstance(value, list) and value else value
    return None if not isinstance(value, (int, float)) or math.isnan(value) else float(value)


def ranked(store: Store, metric: str, mode: str) -> dict[str, list[dict[str, Any]]]:
    """Per search group, its samples best first by ``metric``: finished ones on their
    ``result.json``, then the ones stopped early on Tune's last report (a partial run)."""
    keys = {"val": metric if metric.startswith("val_") else f"val_{metric}", "selected": metric}
    keys["test"] = keys["val"][4:]
    groups: dict[str, list[dict[str, Any]]] = {}
    reports: dict[str, dict[str, Any]] = {}  # per group, Tune's last report of each sample
    for spec in (s for s in folder_trials(store) if s.search):
        if spec.search not in reports:
            summary = store.read_json(f"{spec.search}.json") or {}
            reports[spec.search] = {r["id"]: r for r in summary.get("trials", [])}
        result, last = finished_result(store, spec.id), reports[spec.search].get(spec.id) or {}
        done = result is not None
        record = {k: _figure(result, key) if done else last.get("metric") if key == metric else None
                  for k, key in keys.items()}
        partial_tasks = None if last.get("task") is None else int(last["task"]) + 1
        record |= {"id": spec.id, "spec": spec, "params": spec.params, "finished": done, "num_tasks": spec.split[1],
                   "tasks": len(result.get("acc_seen") or []) if done else partial_tasks}
        groups.setdefault(spec.search, []).append(record)
    sign = -1 if mode == "max" else 1
    for records in groups.values():
        records.sort(key=lambda r: (r["selected"] is None, not r["finished"], sign * (r["selected"] or 0), r["id"]))
    return groups


def search_report(store: Store, *, top_k: int = 5) -> str:
    """``search.md`` / ``search.csv``: per search, the best ``top_k`` samples and all of them,
    validation and test figures side by side; a warning first if it selected on test."""
    meta = load_sweep_meta(store)
    search = meta.get("search") or {}
    metric, mode = search.get("metric", "val_avg_incremental_accuracy"), search.get("mode", "max")
    name = metric.removeprefix("val_")
    md = [f"# {meta.get('name', 'search')}: hyperparameter search", ""]
    if not metric.startswith("val_"):
        md += [f"**WARNING: this search selected on the test metric `{metric}` (`allow_test_selection: true`): the "
               f"chosen configuration's test figures are biased upward. Select on `val_{metric}` for figures a "
               "reviewer accepts.**", ""]
    md.append(f"Selected on `{metric}` ({mode}); `val` is the validation hold-out, `test` the test set (from each "
              "trial's `result.json`). A trial stopped early shows its validation figure after its last finished "
              "task (stopped).")
    csv_rows: list[dict[str, Any]] = []
    for group, records in sorted(ranked(store, metric, mode).items()):
        keys, base = sorted({k for r in records for k in r["params"]}), records[0]["spec"]
        header = ["rank", *keys, f"val {name}", f"test {name}", "tasks", "trial"]
        rows = [[str(i), *(_fmt(r["params"].get(k)) for k in keys),
                 _fmt(r["val"]) + ("" if r["finished"] else " (stopped)"), _fmt(r["test"]),
                 f"{r['tasks'] or 0}/{r['num_tasks']}", r["id"]] for i, r in enumerate(records, 1)]
        md += ["", f"## {group}", "", f"Base: {base.dataset} {base.scenario} {base.split[0]}/{base.split[1]} "
               f"{base.approach} seed {base.seed}; {len(records)} trials.", "",
               f"### Best {min(top_k, len(records))} by {metric}", "", *md_table(header, rows[:top_k]),
               "", "### All trials", "", *md_table(header, rows)]
        csv_rows += [{"group": group, "rank": i, "trial": r["id"], **{f"param.{k}": r["params"].get(k) for k in keys},
                      f"val_{name}": r["val"], f"test_{name}": r["test"], "finished": r["finished"],
                      "tasks_done": r["tasks"], "num_tasks": r["num_tasks"]} for i, r in enumerate(records, 1)]
    md += ["", f"Next: `python -m orchestrator evaluate-best {meta.get('sweep_file', 'SWEEP.yaml')} --results "
           f"{store.root}` reruns the best and the default configuration over seeds "
           f"{search.get('eval_seeds', [0, 1, 2])} and reports test mean ± std ({EVALUATE}/)."]
    text = "\n".join(md) + "\n"
    store.write_text("search.md", text)
    csv = pd.DataFrame(csv_rows, dtype=object).to_csv(index=False, lineterminator="\n") if csv_rows else ""
    store.write_text("search.csv", csv)
    return text


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluation(sweep: schema.Sweep, bases: list[TrialSpec], store: Store,
               where: str) -> tuple[schema.Sweep, list[TrialSpec], Store, str]:
    """``evaluate-best``: per search, the best finished sample's params and the default
    (the base's own options) x ``search.eval_seeds``, as an ordinary grid (rows ``<approach>``
    and ``<approach>-best``) in ``<results>/evaluate/``: its tables are the comparison."""
    if (search := sweep.search) is None:
        raise SweepError(where, "search", "evaluate-best needs a sweep with a search block")
    groups = ranked(store, search.metric, search.mode)
    trials, lines = [], [f"# {sweep.name}: the best configuration against the default, on test", ""]
    for base in dict((b.id, b) for b in bases).values():
        group = search_group_id(base, search)
        best = next((r for r in groups.get(group, []) if r["finished"]), None)
        if best is None:
            raise SweepError(where, "search", f"{group} has no finished trial in {store.root}: run the search first")
        for seed in search.eval_seeds:
            seeded = dataclasses.replace(base, given={**base.given, "seed": seed}, search=None)
            trials += [dataclasses.replace(sampled_trial(seeded, params, None), given={}, variant=variant)
                       for params, variant in (({}, base.variant), (best["params"], f"{base.variant}-best"))]
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best["params"].items()))
        lines.append(f"- {base.variant}-best ({group}): {params}; {search.metric} {_fmt(best['selected'])} "
                     f"(trial {best['id']})")
    text = "\n".join(lines) + f"\n\nSeeds {search.eval_seeds}; cells: test mean ± std over seeds.\n"
    evaluate = Store(store.uri(EVALUATE))
    evaluate.write_text("best.md", text)
    return sweep.model_copy(update={"name": f"{sweep.name}-{EVALUATE}", "search": None}), trials, evaluate, text
