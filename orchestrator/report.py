"""``python -m orchestrator report DIR``: tables, plots and (for searches) the best configs.

Reads only files (``sweep.json``, ``trials/*/result.json``, ``progress.json``): no Ray, no
torch. Run at the end of every sweep, and by hand at any time, even while a sweep runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .aggregate import load_results, report_specs, sweep_report_settings
from .paper_reference import load_reference
from .plots import plot_all
from .search import search_report
from .status import load_sweep_meta
from .store import Store
from .tables import Tables, build_tables

DEFAULT_TABLES = ["avg_incremental_accuracy", "last_accuracy"]


@dataclass
class ReportOutput:
    tables: Tables | None = None
    plots: list[str] = field(default_factory=list)
    search_markdown: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def outside(self) -> list[dict[str, Any]]:
        return [c for c in (self.tables.checks if self.tables else []) if c["verdict"] == "OUTSIDE"]

    def text(self) -> str:
        parts = []
        if self.tables is not None:
            parts.append(self.tables.markdown)
        if self.search_markdown:
            parts.append(self.search_markdown)
        return "\n".join(parts)


def build_report(store: Store, *, plots: bool | None = None, reference_path: str | None = None) -> ReportOutput:
    out = ReportOutput()
    meta = load_sweep_meta(store) or {}
    settings = sweep_report_settings(store)
    if meta.get("search"):
        out.search_markdown = search_report(store, top_k=int(settings.get("top_k", 5)))
        out.files += ["search.md", "search.csv"]
        return out
    specs = report_specs(store)
    if not specs:
        return out
    results = load_results(store, specs)
    want_plots = settings.get("plots", True) if plots is None else plots
    written = plot_all(store, results, specs) if want_plots else []
    out.plots = written
    out.tables = build_tables(
        results,
        specs,
        load_reference(reference_path),
        metrics=list(settings.get("tables") or DEFAULT_TABLES),
        paper=bool(settings.get("paper", True)),
        title=f"{meta.get('name', 'results')}: results",
        plots=written,
    )
    store.write_text("tables.md", out.tables.markdown)
    store.write_text("tables.csv", out.tables.csv)
    store.write_text("tables.tex", out.tables.latex)
    out.files += ["tables.md", "tables.csv", "tables.tex"] + written
    return out
