"""Plots from finished trials (matplotlib, Agg backend: no display needed).

For each data set x scenario x split of the sweep:

* ``curves_<dataset>_<scenario>_<initial>-<tasks>.png``: accuracy on all seen classes
  after each task, one line per approach (mean over seeds) with a band of +- one sample
  standard deviation (no band for one seed);
* ``shots_<dataset>_<scenario>_<initial>-<tasks>.png``: accuracy on many / medium / few-shot
  classes (> 100, 20-100, < 20 training images) after the final task, one bar group per
  approach, error bars +- one std over seeds.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

from .aggregate import layout, split_label
from .store import PLOTS, Store
from .trials import TrialSpec

SHOTS = ("many", "medium", "few")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _mean_std(columns: list[list[float | None]]) -> tuple[list[float], list[float]]:
    means, stds = [], []
    for values in columns:
        vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        m = sum(vals) / len(vals) if vals else math.nan
        s = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) >= 2 else 0.0
        means.append(m)
        stds.append(s)
    return means, stds


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def styles(rows: list[str]) -> dict[str, dict[str, Any]]:
    """One colour (tab10, then tab20 for longer lists) and marker per approach, shared by all plots."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    n = cmap.N
    return {row: {"color": cmap(i % n), "marker": MARKERS[i % len(MARKERS)]} for i, row in enumerate(rows)}


def plot_name(kind: str, col: tuple[str, str, int, int]) -> str:
    return f"{kind}_{col[0]}_{col[1]}_{col[2]}-{col[3]}.png"


def _save(fig: Any, store: Store, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    store.write_bytes(f"{PLOTS}/{name}", buf.getvalue())
    return f"{PLOTS}/{name}"


def plot_all(store: Store, results: pd.DataFrame, specs: list[TrialSpec]) -> list[str]:
    """Write every plot; return their paths relative to the results directory."""
    if not len(results):
        return []
    plt = _pyplot()
    rows, cols = layout(specs)
    style = styles(rows)
    written: list[str] = []
    for col in cols:
        sel = results[
            (results["dataset"] == col[0]) & (results["scenario"] == col[1]) & (results["initial_classes"] == col[2]) & (results["total_tasks"] == col[3])
        ]
        if not len(sel):
            continue
        title = f"{col[0]}, {col[1]}, split {split_label(col[2], col[3])}"
        # -- accuracy after each task
        fig, ax = plt.subplots(figsize=(7.6, 4.4))
        for row in rows:
            runs = sel[sel["row"] == row]
            if not len(runs):
                continue
            curves = [list(c) for c in runs["acc_seen"]]
            steps = max(len(c) for c in curves)
            means, stds = _mean_std([[c[i] if i < len(c) else None for c in curves] for i in range(steps)])
            sizes = next((list(t) for t in runs["task_classes"] if t), [])
            x = [sum(sizes[: i + 1]) for i in range(steps)] if len(sizes) == steps else list(range(1, steps + 1))
            ax.plot(x, means, marker=style[row]["marker"], markersize=4, color=style[row]["color"], label=f"{row} (n={len(runs)})")
            if len(runs) >= 2:
                lower = [max(0.0, m - s) for m, s in zip(means, stds)]
                upper = [min(100.0, m + s) for m, s in zip(means, stds)]
                ax.fill_between(x, lower, upper, color=style[row]["color"], alpha=0.15, linewidth=0)
        ax.set_xlabel("classes seen" if sel["task_classes"].map(bool).all() else "task")
        ax.set_ylabel("accuracy on all seen classes (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{title}: accuracy after each task (mean, band ±1 std over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        written.append(_save(fig, store, plot_name("curves", col)))
        plt.close(fig)
        # -- many / medium / few-shot accuracy after the final task
        fig, ax = plt.subplots(figsize=(7.6, 4.4))
        present = [r for r in rows if len(sel[sel["row"] == r])]
        width = 0.8 / max(1, len(present))
        any_bar = False
        for i, row in enumerate(present):
            runs = sel[sel["row"] == row]
            finals = [[(s.get(name) or [None])[-1] if s.get(name) else None for s in runs["shot_acc"]] for name in SHOTS]
            means, stds = _mean_std(finals)
            xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(SHOTS))]
            heights = [0.0 if math.isnan(m) else m for m in means]
            yerr = None
            if len(runs) >= 2:  # +-1 std, clipped to the 0-100 range accuracy lives in
                yerr = [[min(s, h) for s, h in zip(stds, heights)], [min(s, 100.0 - h) for s, h in zip(stds, heights)]]
            ax.bar(xs, heights, width=width, yerr=yerr, capsize=2, color=style[row]["color"], label=row)
            any_bar = any_bar or any(not math.isnan(m) for m in means)
        counts = next((c for c in sel["shot_counts"] if c), {})
        ax.set_xticks(range(len(SHOTS)))
        ranges = {"many": "> 100", "medium": "20-100", "few": "< 20"}
        ax.set_xticklabels(
            [f"{name} ({ranges[name]} images)\n{_classes(counts.get(name))}" for name in SHOTS]
        )
        ax.set_ylabel("accuracy after the final task (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{title}: many / medium / few-shot classes (mean ±1 std over seeds)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if any_bar:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        written.append(_save(fig, store, plot_name("shots", col)))
        plt.close(fig)
    return written


def _classes(count: Any) -> str:
    if count is None:
        return ""
    return f"{count} class" + ("" if count == 1 else "es")
