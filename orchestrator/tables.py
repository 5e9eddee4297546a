"""The paper's tables from finished trials: ``tables.md``, ``tables.csv``, ``tables.tex``.

One table per metric and data set: rows are approaches, columns scenario x split, cells
the mean +- sample standard deviation over seeds; the best cell of each column in bold;
``(k/n)`` where only k of the n seeds asked for finished. Beside each cell the paper
reports: the published value and our difference (ours - published), with ``re-run`` for
numbers another paper measured. Average incremental accuracy and last accuracy are
separate tables, always labelled by name: they are different numbers.

``check`` compares every published number that has a tolerance with our finished cell.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .aggregate import cell_stats, layout, split_label
from .paper_reference import METRIC_LABELS, Reference, lookup
from .trials import TrialSpec

TITLES = {
    "avg_incremental_accuracy": (
        "Average incremental accuracy (%)",
        "The paper's headline number: after each task, the mean accuracy over the tasks seen so far "
        "(each task weighted equally); then the mean of those over all steps, the first included.",
    ),
    "last_accuracy": (
        "Last accuracy (%)",
        "Accuracy on the test images of all classes after the final task (one step, not an average).",
    ),
    "avg_incremental_accuracy_seen": (
        "Average incremental accuracy over seen images (%)",
        "After each task, the accuracy over all seen test images (each image weighted equally); "
        "then the mean over all steps. Equal to the average incremental accuracy for equal tasks, not for LFH.",
    ),
    "forgetting": (
        "Forgetting (points, lower is better)",
        "Mean over tasks of the drop from a task's best earlier accuracy to its final accuracy.",
    ),
}
LOWER_IS_BETTER = {"forgetting"}


@dataclass
class Cell:
    row: str
    col: tuple[str, str, int, int]
    n: int
    n_asked: int
    mean: float
    std: float
    best: bool = False
    refs: tuple[Reference, ...] = ()


def _stats_by_key(results: pd.DataFrame, specs: list[TrialSpec], metric: str) -> dict[tuple, Cell]:
    stats = cell_stats(results, specs, metric)
    cells: dict[tuple, Cell] = {}
    for rec in stats.to_dict("records"):
        col = (rec["dataset"], rec["scenario"], int(rec["initial_classes"]), int(rec["total_tasks"]))
        cells[(rec["row"], col)] = Cell(rec["row"], col, int(rec["n"]), int(rec["n_asked"]), float(rec["mean"]), float(rec["std"]))
    return cells


def _mark_best(cells: dict[tuple, Cell], cols: list[tuple], metric: str) -> None:
    for col in cols:
        finished = [c for (r, k), c in cells.items() if k == col and c.n > 0]
        if not finished:
            continue
        pick = min if metric in LOWER_IS_BETTER else max
        best = pick(c.mean for c in finished)
        for c in finished:
            c.best = round(c.mean, 2) == round(best, 2)


def _approach_of(row: str, specs: list[TrialSpec]) -> str:
    for s in specs:
        if s.variant == row:
            return s.approach
    return row


def _attach_refs(cells: dict[tuple, Cell], specs: list[TrialSpec], refs: list[Reference], metric: str) -> None:
    for (row, col), cell in cells.items():
        if row != _approach_of(row, specs):
            continue  # a variant (dgr with an option changed) is not what the paper measured
        cell.refs = tuple(lookup(refs, dataset=col[0], scenario=col[1], split=(col[2], col[3]), approach=row, compares_to=metric))


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "\u2212")


def _md_cell(cell: Cell | None, paper: bool) -> str:
    if cell is None:
        return ""
    if cell.n == 0:
        text = f"(0/{cell.n_asked})"
    else:
        text = fmt(cell.mean) + (f" ± {fmt(cell.std)}" if cell.n >= 2 else "")
        if cell.best:
            text = f"**{text}**"
        if cell.n < cell.n_asked:
            text += f" ({cell.n}/{cell.n_asked})"
    if paper and cell.refs:
        notes = []
        for ref in cell.refs:
            diff = f", Δ {_signed(cell.mean - ref.value)}" if cell.n else ""
            notes.append(f"{ref.label} {ref.value:.2f}{diff}")
        text += " [" + "; ".join(notes) + "]"
    return text


def _datasets(cols: list[tuple]) -> list[str]:
    out: list[str] = []
    for col in cols:
        if col[0] not in out:
            out.append(col[0])
    return out


@dataclass
class Tables:
    markdown: str
    csv: str
    latex: str
    checks: list[dict[str, Any]]


def build_tables(
    results: pd.DataFrame,
    specs: list[TrialSpec],
    refs: list[Reference],
    *,
    metrics: list[str],
    paper: bool = True,
    title: str = "",
    plots: list[str] | None = None,
) -> Tables:
    rows, cols = layout(specs)
    unique = {s.id for s in specs}
    finished = len(set(results["id"])) if len(results) else 0
    md: list[str] = [f"# {title or 'Results'}", ""]
    md.append(
        f"{finished} of {len(unique)} trials finished ({time.strftime('%Y-%m-%d %H:%M')}). "
        "Cells: mean ± sample standard deviation over seeds; **bold**: best of the column; "
        "(k/n): only k of the n seeds asked for finished."
        + (
            " In brackets: the published number (`paper`: the DGR paper or the paper that introduced the "
            "baseline; `re-run`: a later paper's re-run) and Δ = ours − published."
            if paper
            else ""
        )
    )
    md.append("Split a/b: a classes in the first task, b tasks in all (LFS: 5/20, 10/10, 20/5; LFH: 50/6, 50/11).")
    tex: list[str] = [
        "% Generated by `python -m orchestrator report`; needs \\usepackage{booktabs}.",
        "% Cells: mean \\pm sample std over seeds; bold: best of the column; superscript k/n: seeds finished/asked;",
        "% in parentheses: the published value (r: a later paper's re-run).",
    ]
    csv_rows: list[dict[str, Any]] = []
    for metric in metrics:
        cells = _stats_by_key(results, specs, metric)
        _mark_best(cells, cols, metric)
        if paper:
            _attach_refs(cells, specs, refs, metric)
        heading, explanation = TITLES[metric]
        for dataset in _datasets(cols):
            dcols = [c for c in cols if c[0] == dataset]
            md += ["", f"## {heading} — {dataset}", "", explanation, ""]
            md.append("| approach | " + " | ".join(f"{c[1]} {split_label(c[2], c[3])}" for c in dcols) + " |")
            md.append("|---|" + "---|" * len(dcols))
            drows = [r for r in rows if any((r, c) in cells for c in dcols)]
            for row in drows:
                md.append(f"| {row} | " + " | ".join(_md_cell(cells.get((row, c)), paper) for c in dcols) + " |")
            tex += _latex_table(heading, dataset, metric, drows, dcols, cells, paper)
        for (row, col), cell in cells.items():
            record: dict[str, Any] = {
                "table": metric,
                "metric_label": METRIC_LABELS.get(metric, metric),
                "dataset": col[0],
                "scenario": col[1],
                "initial_classes": col[2],
                "total_tasks": col[3],
                "split": split_label(col[2], col[3]),
                "approach": row,
                "seeds_finished": cell.n,
                "seeds_asked": cell.n_asked,
                "mean": None if cell.n == 0 else round(cell.mean, 4),
                "std": None if cell.n < 2 else round(cell.std, 4),
                "best": cell.best,
                "paper_value": None,
                "paper_diff": None,
                "rerun_value": None,
                "rerun_diff": None,
            }
            for ref in cell.refs:
                prefix = "rerun" if ref.is_rerun else "paper"
                record[f"{prefix}_value"] = ref.value
                record[f"{prefix}_diff"] = None if cell.n == 0 else round(cell.mean - ref.value, 4)
            csv_rows.append(record)
    checks = check_against_paper(results, specs, refs) if paper else []
    if paper and checks:
        md += ["", "## Comparison with published numbers", ""]
        md.append(
            "Every recovered published number for this sweep's cells (`../shared/paper_results.csv`), the metric of ours "
            "it is compared with, and whether the difference is within the tolerance that `report --check` enforces "
            "(`orchestrator/paper_results.csv`)."
        )
        md.append("")
        md.append("| data set | scenario | split | approach | compared metric | published as | published | ours | Δ | tolerance | verdict |")
        md.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in checks:
            partial = "" if c["n"] in (0, c["n_asked"]) else f" ({c['n']}/{c['n_asked']})"
            md.append(
                f"| {c['dataset']} | {c['scenario']} | {c['split']} | {c['approach']} | {METRIC_LABELS[c['compares_to']]} | "
                f"{c['published_as']} | {c['published']:.2f} | {fmt(c['ours'])}{partial} | "
                f"{_signed(c['diff']) if c['diff'] is not None else '-'} | {fmt(c['tolerance'], 1) if c['tolerance'] is not None else '-'} | {c['verdict']} |"
            )
    if plots:
        md += ["", "## Plots", ""]
        md += [f"![{p}]({p})" for p in plots]
    out = io.StringIO()
    if csv_rows:
        writer = csv.DictWriter(out, fieldnames=list(csv_rows[0].keys()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows)
    return Tables(markdown="\n".join(md) + "\n", csv=out.getvalue(), latex="\n".join(tex) + "\n", checks=checks)


def _tex_escape(text: str) -> str:
    return text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def _tex_cell(cell: Cell | None, paper: bool) -> str:
    if cell is None or cell.n == 0:
        return "--"
    body = fmt(cell.mean) + (f" \\pm {fmt(cell.std)}" if cell.n >= 2 else "")
    text = f"$\\mathbf{{{body}}}$" if cell.best else f"${body}$"
    if cell.n < cell.n_asked:
        text += f"$^{{{cell.n}/{cell.n_asked}}}$"
    if paper and cell.refs:
        text += " {\\scriptsize(" + "; ".join(f"{'r ' if r.is_rerun else ''}{r.value:.2f}" for r in cell.refs) + ")}"
    return text


def _latex_table(heading: str, dataset: str, metric: str, rows: list[str], cols: list[tuple], cells: dict[tuple, Cell], paper: bool) -> list[str]:
    """One booktabs table per data set: scenarios over splits, by ``Styler.to_latex``."""
    frame = pd.DataFrame(
        {(_tex_escape(c[1]), split_label(c[2], c[3])): [_tex_cell(cells.get((row, c)), paper) for row in rows] for c in cols},
        index=[_tex_escape(row) for row in rows],
    )
    latex = frame.style.to_latex(
        caption=f"{_tex_escape(heading)} on {_tex_escape(dataset)}.",
        label=f"tab:{metric}-{dataset}",
        position="t",
        position_float="centering",
        hrules=True,
        multicol_align="c",
        column_format="l" + "c" * len(cols),
    )
    return ["", latex.rstrip()]


def check_against_paper(results: pd.DataFrame, specs: list[TrialSpec], refs: list[Reference]) -> list[dict[str, Any]]:
    """One record per published number that falls in this sweep (or names its approach
    and data set), with our value and a verdict: ``ok``, ``OUTSIDE``, ``not finished``,
    ``no tolerance`` (the split was not recovered)."""
    rows, cols = layout(specs)
    by_metric = {m: _stats_by_key(results, specs, m) for m in {r.compares_to for r in refs}}
    approaches = {_approach_of(r, specs): r for r in rows}
    out = []
    for ref in refs:
        if ref.dataset not in {c[0] for c in cols} or ref.approach not in approaches:
            continue
        record: dict[str, Any] = {
            "dataset": ref.dataset,
            "scenario": ref.scenario,
            "split": split_label(*ref.split) if ref.split else "?",
            "approach": ref.approach,
            "compares_to": ref.compares_to,
            "published_as": ref.metric,
            "published": ref.value,
            "tolerance": ref.tolerance,
            "ours": None,
            "n": 0,
            "n_asked": 0,
            "diff": None,
            "source": ref.source,
        }
        if ref.split is None:
            record["verdict"] = "no tolerance (split not recovered)"
            out.append(record)
            continue
        col = (ref.dataset, ref.scenario, ref.split[0], ref.split[1])
        cell = by_metric[ref.compares_to].get((ref.approach, col)) if col in cols else None
        if cell is None:
            continue  # this cell is not part of the sweep
        record.update(n=cell.n, n_asked=cell.n_asked)
        if cell.n == 0:
            record["verdict"] = "not finished"
        else:
            record["ours"] = cell.mean
            record["diff"] = cell.mean - ref.value
            if ref.tolerance is None:
                record["verdict"] = "no tolerance"
            else:
                record["verdict"] = "ok" if abs(record["diff"]) <= ref.tolerance else "OUTSIDE"
        out.append(record)
    return out
