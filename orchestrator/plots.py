"""Plots from finished trials (matplotlib, Agg backend), per data set x scenario x split of the sweep.

``curves_<dataset>_<scenario>_<initial>-<tasks>.png``: accuracy on all seen classes after each task, a line
per approach (mean over seeds) with a ±1 sample std band; ``shots_...png``: accuracy on many / medium /
few-shot classes (> 100, 20-100, < 20 training images) after the final task, error bars ±1 std.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd

from .store import PLOTS, Store
from .tables import CELL, layout, split_label
from .trials import TrialSpec


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
SHOTS = {"many": "> 100", "medium": "20-100", "few": "< 20"}  # training images per class


def _mean_std(runs: list[list[float | None]]) -> tuple[pd.Series, pd.Series]:
    """Per position, the mean and sample std over runs (std 0 for one run; shorter runs are padded)."""
    frame = pd.DataFrame(runs, dtype=float)
    return frame.mean(), frame.std().fillna(0.0)


def _save(fig: Any, ax: Any, store: Store, name: str, title: str, ylabel: str, legend: bool = True) -> str:
    """The styling both plots share, then the PNG into the store (and the figure closed)."""
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    store.write_bytes(f"{PLOTS}/{name}", buf.getvalue())
    return f"{PLOTS}/{name}"


def plot_all(store: Store, results: pd.DataFrame, specs: list[TrialSpec]) -> list[str]:
    """Write every plot; return their paths relative to the results directory."""
    if not len(results):
        return []
    plt = _pyplot()
    rows, cols = layout(specs)
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")  # one colour and marker per approach, in all plots
    style = {row: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)]} for i, row in enumerate(rows)}
    written: list[str] = []
    for col in cols:
        sel = results[(results[CELL] == list(col)).all(axis=1)]
        if not len(sel):
            continue
        name, title = f"{col[0]}_{col[1]}_{col[2]}-{col[3]}.png", f"{col[0]}, {col[1]}, split {split_label(*col[2:])}"
        present = [(row, sel[sel["row"] == row]) for row in rows if (sel["row"] == row).any()]
        fig, ax = plt.subplots(figsize=(7.6, 4.4))  # accuracy after each task
        for row, runs in present:
            means, stds = _mean_std(list(runs["acc_seen"]))
            sizes = next((list(t) for t in runs["task_classes"] if t), [])
            x = pd.Series(sizes).cumsum().tolist() if len(sizes) == len(means) else list(range(1, len(means) + 1))
            ax.plot(x, means, markersize=4, label=f"{row} (n={len(runs)})", **style[row])
            if len(runs) >= 2:
                ax.fill_between(x, (means - stds).clip(lower=0), (means + stds).clip(upper=100),
                                color=style[row]["color"], alpha=0.15, linewidth=0)
        ax.set_xlabel("classes seen" if sel["task_classes"].map(bool).all() else "task")
        ax.grid(alpha=0.3)
        written.append(_save(fig, ax, store, f"curves_{name}", f"{title}: accuracy after each task (mean, band ±1 std "
                             "over seeds)", "accuracy on all seen classes (%)"))
        fig, ax = plt.subplots(figsize=(7.6, 4.4))  # many / medium / few-shot accuracy after the final task
        width, any_bar = 0.8 / len(present), False
        for i, (row, runs) in enumerate(present):
            means, stds = _mean_std([[(s.get(shot) or [None])[-1] for shot in SHOTS] for s in runs["shot_acc"]])
            heights = means.fillna(0.0)  # +-1 std, clipped to the 0-100 range accuracy lives in
            yerr = [stds.clip(upper=heights), stds.clip(upper=100.0 - heights)] if len(runs) >= 2 else None
            xs = [j + (i - (len(present) - 1) / 2) * width for j in range(len(SHOTS))]
            ax.bar(xs, heights, width=width, yerr=yerr, capsize=2, color=style[row]["color"], label=row)
            any_bar = any_bar or means.notna().any()
        counts = next((c for c in sel["shot_counts"] if c), {})
        ax.set_xticks(range(len(SHOTS)))
        ax.set_xticklabels([f"{shot} ({n} images)\n{_classes(counts.get(shot))}" for shot, n in SHOTS.items()])
        ax.grid(axis="y", alpha=0.3)
        written.append(_save(fig, ax, store, f"shots_{name}", f"{title}: many / medium / few-shot classes (mean ±1 "
                             "std over seeds)", "accuracy after the final task (%)", legend=any_bar))
    return written


def _classes(count: Any) -> str:
    return "" if count is None else f"{count} class" + ("" if count == 1 else "es")
