"""``python -m orchestrator report DIR``: tables, plots and (for searches) the best configs.

Reads only files (``sweep.json``, ``trials/*/result.json``, ``search_<group>.json``): no Ray,
no torch; run at the end of every sweep, and by hand at any time, even while a sweep runs.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .plots import plot_all
from .status import load_sweep_meta
from .store import RESULT_JSON, TRIAL_JSON, TRIALS, Store, trial_rel
from .trials import TrialSpec
from .tables import build_tables, load_reference, load_results, report_specs


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
    tables = build_tables(results, specs, load_reference(reference_path), plots=written,
                          title=f"{meta.get('name', 'results')}: results", paper=bool(settings.get("paper", True)),
                          metrics=list(settings.get("tables") or ["avg_incremental_accuracy", "last_accuracy"]))
    for ext, key in (("md", "markdown"), ("csv", "csv"), ("tex", "latex")):
        store.write_text(f"tables.{ext}", getattr(tables, key))
    return ReportOutput(tables=tables, files=["tables.md", "tables.csv", "tables.tex"] + written)


# ----------------------------------------------------------------------------- searches


def _metric_of(result: dict[str, Any] | None, progress: dict[str, Any] | None, metric: str) -> tuple[float | None, int | None]:
    """The search metric: the finished run's summary, else the last per-task report Ray got
    (kept in the search's summary, ``search_<group>.json``)."""
    if isinstance(result, dict) and result.get("status") == "finished":
        if metric == "avg_incremental_accuracy":
            return result.get("avg_incremental_accuracy"), len(result.get("acc_seen") or [])
        series = result.get(metric) or []
        return (series[-1] if series else None), len(result.get("acc_seen") or [])
    if isinstance(progress, dict):
        task = progress.get("task")
        return progress.get("metric"), (None if task is None else int(task) + 1)
    return None, None


def search_trials(store: Store) -> list[dict[str, Any]]:
    out = []
    summaries: dict[str, dict[str, Any]] = {}
    for tid in store.list_dirs(TRIALS):
        data = store.read_json(trial_rel(tid, TRIAL_JSON))
        if not isinstance(data, dict) or not data.get("search"):
            continue
        spec = TrialSpec.from_json(data)
        if spec.search not in summaries:
            summary = store.read_json(f"{spec.search}.json") or {}
            summaries[spec.search] = {r["id"]: r for r in summary.get("trials", []) if isinstance(r, dict)}
        out.append({"spec": spec, "result": store.read_json(trial_rel(tid, RESULT_JSON)), "progress": summaries[spec.search].get(tid)})
    return out


def search_report(store: Store, *, top_k: int = 5) -> str:
    meta = load_sweep_meta(store) or {}
    search = meta.get("search") or {}
    metric, mode = search.get("metric", "avg_incremental_accuracy"), search.get("mode", "max")
    trials = search_trials(store)
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        groups.setdefault(t["spec"].search, []).append(t)
    md = [f"# {meta.get('name', 'search')}: hyperparameter search", ""]
    md.append(
        f"Metric: `{metric}` ({mode}). For a finished trial its final value; for one stopped early, "
        "the value after its last finished task (marked). Note: cil_core reports test-set accuracy, so the best "
        "configuration's score is an optimistic estimate; confirm it with fresh seeds."
    )
    rows_csv: list[dict[str, Any]] = []
    for group, members in sorted(groups.items()):
        keys = sorted({k for m in members for k in m["spec"].params})
        records = []
        for m in members:
            value, tasks = _metric_of(m["result"], m["progress"], metric)
            finished = isinstance(m["result"], dict) and m["result"].get("status") == "finished"
            records.append({"id": m["spec"].id, "params": m["spec"].params, "value": value, "tasks": tasks, "finished": finished, "num_tasks": m["spec"].split[1]})
        sign = -1 if mode == "max" else 1
        records.sort(key=lambda r: (r["value"] is None or (isinstance(r["value"], float) and math.isnan(r["value"])), not r["finished"], sign * (r["value"] or 0)))
        base = members[0]["spec"]
        md += ["", f"## {group}", "", f"Base: {base.dataset} {base.scenario} {base.split[0]}/{base.split[1]} {base.approach} seed {base.seed}; {len(records)} trials.", ""]
        md.append(f"### Best {min(top_k, len(records))} by {metric}")
        md.append("")
        header = "| rank | " + " | ".join(keys) + f" | {metric} | tasks | trial |"
        md += [header, "|---|" + "---|" * (len(keys) + 3)]
        for i, r in enumerate(records[:top_k], 1):
            md.append(f"| {i} | " + " | ".join(_fmt_param(r["params"].get(k)) for k in keys) + f" | {_fmt_metric(r)} | {r['tasks'] or 0}/{r['num_tasks']} | {r['id']} |")
        md += ["", "### All trials", "", header, "|---|" + "---|" * (len(keys) + 3)]
        for i, r in enumerate(records, 1):
            md.append(f"| {i} | " + " | ".join(_fmt_param(r["params"].get(k)) for k in keys) + f" | {_fmt_metric(r)} | {r['tasks'] or 0}/{r['num_tasks']} | {r['id']} |")
            rows_csv.append({"group": group, "rank": i, "trial": r["id"], **{f"param.{k}": r["params"].get(k) for k in keys}, metric: r["value"], "finished": r["finished"], "tasks_done": r["tasks"], "num_tasks": r["num_tasks"]})
    text = "\n".join(md) + "\n"
    store.write_text("search.md", text)
    buf = io.StringIO()
    if rows_csv:
        fields = list(dict.fromkeys(k for row in rows_csv for k in row))
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows_csv)
    store.write_text("search.csv", buf.getvalue())
    return text


def _fmt_param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_metric(record: dict[str, Any]) -> str:
    value = record["value"]
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return text if record["finished"] else f"{text} (stopped)"
