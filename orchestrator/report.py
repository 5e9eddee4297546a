"""``python -m orchestrator report DIR``: tables, plots and (for searches) the best configs.

Reads only files (``sweep.json``, ``trials/*/result.json``, ``search_<group>.json``): no Ray,
no torch; run at the end of every sweep, and by hand at any time, even while a sweep runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pandas as pd

from .plots import plot_all
from .status import folder_trials, load_sweep_meta
from .store import RESULT_JSON, Store, trial_rel
from .tables import build_tables, load_reference, load_results, md_table, report_specs


@dataclass
class ReportOutput:
    tables: SimpleNamespace | None = None  # build_tables' markdown, csv, latex, checks
    search_markdown: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def checks(self) -> list[dict[str, Any]]:
        return self.tables.checks if self.tables else []

    def text(self) -> str:
        return "\n".join(p for p in (self.tables and self.tables.markdown, self.search_markdown) if p)


def build_report(store: Store, *, plots: bool | None = None, reference_path: str | None = None) -> ReportOutput:
    meta = load_sweep_meta(store) or {}
    settings = meta.get("report") or {}
    if meta.get("search"):
        return ReportOutput(search_markdown=search_report(store, top_k=int(settings.get("top_k", 5))),
                            files=["search.md", "search.csv"])
    specs = report_specs(store)
    if not specs:
        return ReportOutput()
    results = load_results(store, specs)
    written = plot_all(store, results, specs) if (settings.get("plots", True) if plots is None else plots) else []
    tables = build_tables(results, specs, load_reference(reference_path), title=f"{meta.get('name', 'results')}: results",
                          metrics=list(settings.get("tables") or ["avg_incremental_accuracy", "last_accuracy"]),
                          paper=bool(settings.get("paper", True)), plots=written)
    for ext, key in (("md", "markdown"), ("csv", "csv"), ("tex", "latex")):
        store.write_text(f"tables.{ext}", getattr(tables, key))
    return ReportOutput(tables=tables, files=["tables.md", "tables.csv", "tables.tex"] + written)


def _metric_of(result: Any, progress: Any, metric: str) -> tuple[float | None, int | None]:
    """The search metric: the finished run's summary, else the last per-task report Ray got
    (kept in the search's summary, ``search_<group>.json``)."""
    if isinstance(result, dict) and result.get("status") == "finished":
        value = result.get(metric) if metric == "avg_incremental_accuracy" else (result.get(metric) or [None])[-1]
        return value, len(result.get("acc_seen") or [])
    if isinstance(progress, dict):
        return progress.get("metric"), None if progress.get("task") is None else int(progress["task"]) + 1
    return None, None


def search_report(store: Store, *, top_k: int = 5) -> str:
    """Per search group: the best ``top_k`` samples and all of them (``search.md``, ``search.csv``)."""
    meta = load_sweep_meta(store) or {}
    metric, mode = (meta.get("search") or {}).get("metric", "avg_incremental_accuracy"), meta["search"].get("mode", "max")
    groups: dict[str, list[dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for spec in (s for s in folder_trials(store) if s.search):
        tid = spec.id
        if spec.search not in summaries:
            summary = store.read_json(f"{spec.search}.json") or {}
            summaries[spec.search] = {r["id"]: r for r in summary.get("trials", []) if isinstance(r, dict)}
        result = store.read_json(trial_rel(tid, RESULT_JSON))
        value, tasks = _metric_of(result, summaries[spec.search].get(tid), metric)
        finished = isinstance(result, dict) and result.get("status") == "finished"
        groups.setdefault(spec.search, []).append({"spec": spec, "value": value, "tasks": tasks, "finished": finished})
    md = [f"# {meta.get('name', 'search')}: hyperparameter search", "",
          f"Metric: `{metric}` ({mode}). For a finished trial its final value; for one stopped early, the value after "
          "its last finished task (marked). Note: cil_core reports test-set accuracy, so the best configuration's "
          "score is an optimistic estimate; confirm it with fresh seeds."]
    rows_csv: list[dict[str, Any]] = []
    for group, records in sorted(groups.items()):
        keys = sorted({k for r in records for k in r["spec"].params})
        sign = -1 if mode == "max" else 1
        records.sort(key=lambda r: (r["value"] is None or math.isnan(r["value"]), not r["finished"], sign * (r["value"] or 0)))
        base = records[0]["spec"]
        header = ["rank", *keys, metric, "tasks", "trial"]
        table = [[str(i), *(_fmt_param(r["spec"].params.get(k)) for k in keys),
                  "-" if r["value"] is None else f"{r['value']:.2f}" + ("" if r["finished"] else " (stopped)"),
                  f"{r['tasks'] or 0}/{r['spec'].split[1]}", r["spec"].id] for i, r in enumerate(records, 1)]
        md += ["", f"## {group}", "", f"Base: {base.dataset} {base.scenario} {base.split[0]}/{base.split[1]} "
               f"{base.approach} seed {base.seed}; {len(records)} trials.", "",
               f"### Best {min(top_k, len(records))} by {metric}", "", *md_table(header, table[:top_k]),
               "", "### All trials", "", *md_table(header, table)]
        rows_csv += [{"group": group, "rank": i, "trial": r["spec"].id, **{f"param.{k}": r["spec"].params.get(k) for k in keys},
                      metric: r["value"], "finished": r["finished"], "tasks_done": r["tasks"], "num_tasks": r["spec"].split[1]}
                     for i, r in enumerate(records, 1)]
    text = "\n".join(md) + "\n"
    store.write_text("search.md", text)
    store.write_text("search.csv", pd.DataFrame(rows_csv, dtype=object).to_csv(index=False) if rows_csv else "")
    return text


def _fmt_param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
