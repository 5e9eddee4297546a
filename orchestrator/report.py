"""``python -m orchestrator report DIR``: tables, plots and (for searches) the best configs.

Reads only files (``sweep.json``, ``trials/*/result.json``, ``search_<group>.json``): no Ray,
no torch; run at the end of every sweep, and by hand at any time, even while a sweep runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from .plots import plot_all
from .search import search_report
from .status import folder_trials, load_sweep_meta, sweep_trials
from .store import Store
from .tables import build_tables, load_reference, load_results


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
    meta = load_sweep_meta(store)
    settings = meta.get("report") or {}
    if meta.get("search"):
        return ReportOutput(search_markdown=search_report(store, top_k=int(settings.get("top_k", 5))),
                            files=["search.md", "search.csv"])
    specs = sweep_trials(store) or [s for s in folder_trials(store) if not s.search]  # no sweep.json: the folders
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
