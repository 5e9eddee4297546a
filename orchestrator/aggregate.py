"""``result.json`` files -> pandas frames (no Ray, no torch: only the files are read).

The trials a report covers are those of ``sweep.json`` (the last run's expansion, which
also says how many seeds each cell asked for); without one, every trial folder that has a
``trial.json`` and is not part of a search.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .status import load_sweep_meta, sweep_trials
from .store import RESULT_JSON, TRIAL_JSON, TRIALS, Store, trial_rel
from .trials import TrialSpec

CELL_KEYS = ["dataset", "scenario", "initial_classes", "total_tasks"]
SUMMARY_METRICS = ["avg_incremental_accuracy", "last_accuracy", "avg_incremental_accuracy_seen", "forgetting"]


def report_specs(store: Store) -> list[TrialSpec]:
    specs = sweep_trials(store)
    if specs:
        return specs
    out = []
    for tid in store.list_dirs(TRIALS):
        data = store.read_json(trial_rel(tid, TRIAL_JSON))
        if isinstance(data, dict) and not data.get("search"):
            try:
                out.append(TrialSpec.from_json(data))
            except (KeyError, TypeError):
                continue
    return out


def split_label(initial: int, tasks: int) -> str:
    return f"{int(initial)}/{int(tasks)}"


def _spec_row(spec: TrialSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "row": spec.variant,
        "approach": spec.approach,
        "dataset": spec.dataset,
        "scenario": spec.scenario,
        "initial_classes": spec.split[0],
        "total_tasks": spec.split[1],
        "seed": spec.seed,
    }


def load_results(store: Store, specs: list[TrialSpec]) -> pd.DataFrame:
    """One row per finished trial of ``specs`` (a trial listed under two rows counts for both)."""
    rows = []
    cache: dict[str, Any] = {}
    for spec in specs:
        if spec.id not in cache:
            cache[spec.id] = store.read_json(trial_rel(spec.id, RESULT_JSON))
        result = cache[spec.id]
        if not isinstance(result, dict) or result.get("status") != "finished":
            continue
        row = _spec_row(spec)
        for key in SUMMARY_METRICS:
            value = result.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) else math.nan
        row["acc_seen"] = list(result.get("acc_seen") or [])
        row["task_avg_acc"] = list(result.get("task_avg_acc") or [])
        row["shot_acc"] = dict(result.get("shot_acc") or {})
        row["shot_counts"] = dict(result.get("shot_counts") or {})
        row["task_classes"] = [len(t) for t in result.get("task_classes") or []]
        row["wall_s"] = result.get("wall_s")
        row["device"] = result.get("device")
        rows.append(row)
    if rows:
        return pd.DataFrame(rows)
    columns = ["id", "row", "approach", "dataset", "scenario", "initial_classes", "total_tasks", "seed"]
    return pd.DataFrame(columns=columns + SUMMARY_METRICS + ["acc_seen", "task_avg_acc", "shot_acc", "shot_counts", "task_classes", "wall_s", "device"])


def layout(specs: list[TrialSpec]) -> tuple[list[str], list[tuple[str, str, int, int]]]:
    """Table rows (approaches, in sweep order) and columns (data set x scenario x split)."""
    rows: list[str] = []
    cols: list[tuple[str, str, int, int]] = []
    for spec in specs:
        if spec.variant not in rows:
            rows.append(spec.variant)
        col = (spec.dataset, spec.scenario, spec.split[0], spec.split[1])
        if col not in cols:
            cols.append(col)
    return rows, cols


def cell_stats(results: pd.DataFrame, specs: list[TrialSpec], metric: str) -> pd.DataFrame:
    """Per (row, column): seeds asked, seeds finished, mean and sample std of ``metric``."""
    keys = ["row", *CELL_KEYS]
    asked = pd.DataFrame([{"row": s.variant, "dataset": s.dataset, "scenario": s.scenario, "initial_classes": s.split[0],
                           "total_tasks": s.split[1], "seed": s.seed} for s in specs]).drop_duplicates()
    asked = asked.groupby(keys, sort=False).agg(n_asked=("seed", "size")).reset_index()
    done = results[keys + ["seed", metric]].drop_duplicates(keys + ["seed"]).dropna(subset=[metric]) if len(results) else None
    if done is None or not len(done):
        stats = pd.DataFrame(columns=keys + ["n", "mean", "std", "values"])
    else:
        done = done.astype({metric: float})
        stats = done.groupby(keys, sort=False)[metric].agg(n="size", mean="mean", std="std", values=list).reset_index()
    out = asked.merge(stats, on=keys, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    out["values"] = [v if isinstance(v, list) else [] for v in out["values"]]
    out["metric"] = metric
    return out.astype({"mean": float, "std": float})


def sweep_report_settings(store: Store) -> dict[str, Any]:
    meta = load_sweep_meta(store) or {}
    return meta.get("report") or {}
