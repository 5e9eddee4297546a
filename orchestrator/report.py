"""``python -m orchestrator report DIR``: tables, plots and (for searches) the best configs.

Reads only files (``sweep.json``, ``trials/*/result.json``, ``search_<group>.json``): no Ray,
no torch; run at the end of every sweep, and by hand at any time, even while a sweep runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .plots import plot_all
from .search import search_report
from .status import folder_trials, load_sweep_meta, sweep_trials
from .store import Store
from .tables import build_tables, load_reference, load_results


@dataclass
class ReportOutput:
    text: str = ""  # the tables' markdown, or the search's
    checks: list[dict[str, Any]] = field(default_factory=list)  # the tables' comparison with published numbers
    files: list[str] = field(default_factory=list)  # what was written; none: no trials found


def build_report(store: Store, *, plots: bool | None = None, reference_path: str | None = None) -> ReportOutput:
    meta = load_sweep_meta(store)
    settings = meta.get("report") or {}
    if meta.get("search"):
        text = search_report(store, top_k=int(settings.get("top_k", 5)))
        return ReportOutput(text, files=["search.md", "search.csv"])
    # without sweep.json: every trial folder that is not part of a search
    specs = sweep_trials(store) or [s for s in folder_trials(store) if not s.search]
    if not specs:
        return ReportOutput()
    results = load_results(store, specs)
    written = plot_all(store, results, specs) if (settings.get("plots", True) if plots is None else plots) else []
    tables = build_tables(results, specs, load_reference(reference_path), plots=written,
                          title=f"{meta.get('name', 'results')}: results", paper=bool(settings.get("paper", True)),
                          metrics=list(settings.get("tables") or ["avg_incremental_accuracy", "last_accuracy"]))
    for ext, key in (("md", "markdown"), ("csv", "csv"), ("tex", "latex")):
        store.write_text(f"tables.{ext}", getattr(tables, key))
    return ReportOutput(tables.markdown, tables.checks, ["tables.md", "tables.csv", "tables.tex"] + written)
