"""The paper's tables from the finished trials' ``result.json``: ``tables.md``, ``.csv``, ``.tex``.

One table per metric and data set: rows approaches, columns scenario x split, cells mean ±
sample std over seeds (``groupby().agg``), the best of each column in bold, ``(k/n)`` where
only k of n seeds finished, and beside each cell the published numbers of
``paper_results.csv``: ``../shared/paper_results.csv`` plus ``compares_to`` (the metric of
ours a row is compared with; averages and last accuracy are never mixed) and ``tolerance``
(2.0 points for averages, 3.0 for last accuracy: about 2-3 seed standard deviations on
CIFAR-100-LT, and the published values are one or a few runs on other code; a split that was
not recovered has none: listed, never checked).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from .status import finished_result
from .store import Store
from .trials import TrialSpec

REFERENCE = Path(__file__).with_name("paper_results.csv")
CELL = ["dataset", "scenario", "initial_classes", "total_tasks"]
TITLES = {  # metric -> (heading, explanation)
    "avg_incremental_accuracy": ("Average incremental accuracy (%)", "The paper's headline number: after each task, "
                                 "the mean accuracy over the tasks seen so far (each task weighted equally); then the "
                                 "mean of those over all steps, the first included."),
    "last_accuracy": ("Last accuracy (%)", "Accuracy on the test images of all classes after the final task (one "
                      "step, not an average)."),
    "avg_incremental_accuracy_seen": ("Average incremental accuracy over seen images (%)", "After each task, the "
                                      "accuracy over all seen test images (each image weighted equally); then the "
                                      "mean over all steps. Equal to the average incremental accuracy for equal "
                                      "tasks, not for LFH."),
    "forgetting": ("Forgetting (points, lower is better)", "Mean over tasks of the drop from a task's best earlier "
                   "accuracy to its final accuracy."),
}
LABELS = {metric: heading.split(" (")[0].lower() for metric, (heading, _) in TITLES.items()}  # in the csv
LOWER_IS_BETTER = {"forgetting"}


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The published numbers; ``rerun``: another paper's re-run of the method."""
    ref = pd.read_csv(path or REFERENCE, dtype={"source": str})
    return ref.assign(rerun=ref["metric"].str.endswith("_rerun"))


def split_label(initial: int, tasks: int) -> str:
    return f"{int(initial)}/{int(tasks)}"


def spec_frame(specs: list[TrialSpec]) -> pd.DataFrame:
    rows = [(s.id, s.variant, s.approach, s.dataset, s.scenario, *s.split, s.seed) for s in specs]
    return pd.DataFrame(rows, columns=["id", "row", "approach", *CELL, "seed"])


def load_results(store: Store, specs: list[TrialSpec]) -> pd.DataFrame:
    """One row per finished trial of ``specs`` (a trial listed under two rows counts for both)."""
    found = {tid: r for tid in dict.fromkeys(s.id for s in specs) if (r := finished_result(store, tid))}
    found = {tid: {**{m: float(r[m]) if isinstance(r.get(m), (int, float)) else math.nan for m in TITLES},
                   "acc_seen": list(r.get("acc_seen") or []), "shot_acc": dict(r.get("shot_acc") or {}),
                   "shot_counts": dict(r.get("shot_counts") or {}),
                   "task_classes": [len(t) for t in r.get("task_classes") or []]} for tid, r in found.items()}
    columns = [*TITLES, "acc_seen", "shot_acc", "shot_counts", "task_classes"]
    metrics = pd.DataFrame.from_dict(found, orient="index", columns=columns)
    return spec_frame(specs).join(metrics, on="id", how="inner").reset_index(drop=True)


def layout(specs: list[TrialSpec]) -> tuple[list[str], list[tuple[str, str, int, int]]]:
    """Table rows (approaches, in sweep order) and columns (data set x scenario x split)."""
    rows = list(dict.fromkeys(s.variant for s in specs))
    return rows, list(dict.fromkeys((s.dataset, s.scenario, *s.split) for s in specs))


def cell_stats(results: pd.DataFrame, specs: list[TrialSpec], metric: str) -> pd.DataFrame:
    """Per (row, column), indexed so: seeds asked, seeds finished, mean and sample std of ``metric``, best."""
    keys = ["row", *CELL]
    asked = spec_frame(specs).drop_duplicates(keys + ["seed"]).groupby(keys, sort=False).size().rename("n_asked")
    done = results.drop_duplicates(keys + ["seed"]).dropna(subset=[metric]).astype({metric: float})
    stats = asked.to_frame().join(done.groupby(keys, sort=False)[metric].agg(n="size", mean="mean", std="std"))
    stats["n"] = stats["n"].fillna(0).astype(int)
    best = stats[stats["n"] > 0].groupby(CELL)["mean"].transform("min" if metric in LOWER_IS_BETTER else "max")
    stats["best"] = (stats["n"] > 0) & (stats["mean"].round(2) == best.reindex(stats.index).round(2))
    return stats.astype({"mean": float, "std": float})


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "\u2212")


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _cells(c: Any, refs: pd.DataFrame) -> tuple[str, str]:
    """One cell in markdown and LaTeX: mean ± std (bold: the column's best), k/n when not every seed
    finished, then the published numbers (LaTeX: only beside a number of ours)."""
    if c.n == 0:
        md, tex = f"(0/{c.n_asked})", "--"
    else:
        md = fmt(c.mean) + (f" ± {fmt(c.std)}" if c.n >= 2 else "")
        md, tex = (f"**{md}**", f"$\\mathbf{{{md}}}$") if c.best else (md, f"${md}$")
        if c.n < c.n_asked:
            md, tex = f"{md} ({c.n}/{c.n_asked})", f"{tex}$^{{{c.n}/{c.n_asked}}}$"
        if len(refs):
            tex += " {\\scriptsize(" + "; ".join(f"{'r ' if r.rerun else ''}{r.value:.2f}" for r in refs.itertuples())
            tex += ")}"
    if len(refs):
        md += " [" + "; ".join(f"{'re-run' if r.rerun else 'paper'} {r.value:.2f}"
                               + (f", Δ {_signed(c.mean - r.value)}" if c.n else "") for r in refs.itertuples()) + "]"
    return md, tex.replace(" ± ", " \\pm ")


def _tex(text: str) -> str:
    return text.replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")


def build_tables(results: pd.DataFrame, specs: list[TrialSpec], ref: pd.DataFrame, *, metrics: list[str],
                 paper: bool = True, title: str = "", plots: list[str] | None = None) -> SimpleNamespace:
    """``markdown``, ``csv``, ``latex`` and ``checks`` (the comparison's records) for ``metrics``."""
    rows, cols = layout(specs)
    approach_of = {s.variant: s.approach for s in specs}
    refs_of = {key: g.sort_values("rerun", kind="stable") for key, g in ref.groupby([*CELL, "approach", "compares_to"])}
    none = ref.iloc[:0]
    md = [f"# {title or 'Results'}", "", f"{results['id'].nunique()} of {len({s.id for s in specs})} trials finished "
          f"({time.strftime('%Y-%m-%d %H:%M')}). Cells: mean ± sample standard deviation over seeds; "
          "**bold**: best of the column; (k/n): only k of the n seeds asked for finished."
          + (" In brackets: the published number (`paper`: the DGR paper or the paper that introduced the baseline; "
             "`re-run`: a later paper's re-run) and Δ = ours − published." if paper else ""),
          "Split a/b: a classes in the first task, b tasks in all (LFS: 5/20, 10/10, 20/5; LFH: 50/6, 50/11)."]
    tex = ["% Generated by `python -m orchestrator report`; needs \\usepackage{booktabs}.",
           "% Cells: mean \\pm sample std over seeds; bold: best of the column; superscript k/n: seeds finished/asked;",
           "% in parentheses: the published value (r: a later paper's re-run)."]
    records = []
    for metric in metrics:
        stats = cell_stats(results, specs, metric)
        heading, explanation = TITLES[metric]
        cells = {}
        for c in stats.reset_index().itertuples():
            col = (c.dataset, c.scenario, c.initial_classes, c.total_tasks)
            # a variant (an option changed) is not what the paper measured
            refs = refs_of.get((*col, c.row, metric), none) if paper and approach_of[c.row] == c.row else none
            cells[(c.row, col)] = _cells(c, refs)
            published = {f"{'rerun' if r.rerun else 'paper'}_{key}": value for r in refs.itertuples() for key, value
                         in (("value", r.value), ("diff", None if c.n == 0 else round(c.mean - r.value, 4)))}
            records.append({"table": metric, "metric_label": LABELS[metric], **dict(zip(CELL, col)),
                            "split": split_label(*col[2:]), "approach": c.row, "seeds_finished": c.n,
                            "seeds_asked": c.n_asked, "mean": None if c.n == 0 else round(c.mean, 4),
                            "std": None if c.n < 2 else round(c.std, 4), "best": c.best, "paper_value": None,
                            "paper_diff": None, "rerun_value": None, "rerun_diff": None, **published})
        for dataset in dict.fromkeys(col[0] for col in cols):
            dcols = [col for col in cols if col[0] == dataset]
            drows = [r for r in rows if any((r, col) in cells for col in dcols)]
            md += ["", f"## {heading} — {dataset}", "", explanation, ""]
            md += md_table(["approach"] + [f"{col[1]} {split_label(*col[2:])}" for col in dcols],
                           [[r] + [cells.get((r, col), ("",))[0] for col in dcols] for r in drows])
            frame = pd.DataFrame({(_tex(col[1]), split_label(*col[2:])): [cells.get((r, col), ("", "--"))[1]
                                                                          for r in drows] for col in dcols},
                                 index=[_tex(r) for r in drows])
            latex = frame.style.to_latex(caption=f"{_tex(heading)} on {_tex(dataset)}.", position="t", hrules=True,
                                         label=f"tab:{metric}-{dataset}", position_float="centering",
                                         multicol_align="c", column_format="l" + "c" * len(dcols))
            tex += ["", latex.rstrip()]
    checks = check_against_paper(results, specs, ref) if paper else []
    if checks:
        md += ["", "## Comparison with published numbers", "",
               "Every recovered published number for this sweep's cells (`../shared/paper_results.csv`), the metric of "
               "ours it is compared with, and whether the difference is within the tolerance that `report --check` "
               "enforces (`orchestrator/paper_results.csv`).", ""]
        md += md_table(["data set", "scenario", "split", "approach", "compared metric", "published as", "published",
                        "ours", "Δ", "tolerance", "verdict"],
                       [[c["dataset"], c["scenario"], c["split"], c["approach"], LABELS[c["compares_to"]],
                         c["published_as"], f"{c['published']:.2f}",
                         fmt(c["ours"]) + ("" if c["n"] in (0, c["n_asked"]) else f" ({c['n']}/{c['n_asked']})"),
                         "-" if c["diff"] is None else _signed(c["diff"]), fmt(c["tolerance"], 1), c["verdict"]]
                        for c in checks])
    if plots:
        md += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return SimpleNamespace(markdown="\n".join(md) + "\n", latex="\n".join(tex) + "\n", checks=checks,
                           csv=pd.DataFrame(records, dtype=object).to_csv(index=False) if records else "")


def check_against_paper(results: pd.DataFrame, specs: list[TrialSpec], ref: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per published number of this sweep's cells (or naming its approach and data set), with our
    value and a verdict: ``ok``, ``OUTSIDE``, ``not finished``, ``no tolerance`` (split not recovered)."""
    stats = {m: cell_stats(results, specs, m) for m in set(ref["compares_to"])}
    mine, out = ref["dataset"].isin({s.dataset for s in specs}) & ref["approach"].isin({s.approach for s in specs}), []
    for r in ref[mine].itertuples():
        recovered, tolerance = not math.isnan(r.initial_classes), None if math.isnan(r.tolerance) else r.tolerance
        key = (r.approach, r.dataset, r.scenario, *(int(v) for v in (r.initial_classes, r.total_tasks) if recovered))
        if recovered and key not in stats[r.compares_to].index:
            continue  # this cell is not part of the sweep
        c = stats[r.compares_to].loc[key] if recovered else {"n": 0, "n_asked": 0}
        n, diff = int(c["n"]), c["mean"] - r.value if c["n"] else None
        verdict = ("no tolerance (split not recovered)" if not recovered else "not finished" if not n
                   else "no tolerance" if tolerance is None else "ok" if abs(diff) <= tolerance else "OUTSIDE")
        out.append({"dataset": r.dataset, "scenario": r.scenario, "approach": r.approach, "compares_to": r.compares_to,
                    "split": split_label(r.initial_classes, r.total_tasks) if recovered else "?",
                    "published_as": r.metric, "published": r.value, "ours": c["mean"] if n else None, "n": n,
                    "n_asked": int(c["n_asked"]), "diff": diff, "tolerance": tolerance, "source": r.source,
                    "verdict": verdict})
    return out
