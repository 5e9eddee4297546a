"""``--only AXIS=V1,V2``: run a slice of a sweep, keep the whole sweep in the tables.

A user with one machine runs seed 0 of every cell first, or splits a grid over machines by
data set; the report still covers the full sweep (``sweep.json`` holds every trial, so cells
show "1 of 3 seeds"), and later runs of the same sweep skip what the slice finished.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from .errors import SweepError
from .sweep import TrialSpec

AXES = ("dataset", "scenario", "split", "approach", "seed")


def _axis_value(spec: TrialSpec, axis: str) -> str:
    config = spec.config
    if axis == "split":
        return f"{config['initial_classes']}/{config['total_tasks']}"
    if axis == "approach":
        return spec.row
    return str(config[axis])


def parse_only(items: Sequence[str]) -> dict[str, set[str]]:
    """``["seed=0", "split=20/5,50/6"]`` -> ``{"seed": {"0"}, "split": {"20/5", "50/6"}}``."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        axis, sep, values = item.partition("=")
        axis = axis.strip()
        if not sep or not values.strip():
            raise SweepError("--only", None, f"expected AXIS=V1,V2, got {item!r}")
        if axis not in AXES:
            raise SweepError("--only", axis, f"unknown axis; choose one of: {', '.join(AXES)}")
        parts = [v.strip().replace("-", "/") if axis == "split" else v.strip() for v in values.split(",")]
        if axis == "split" and any("/" not in p for p in parts):
            raise SweepError("--only", "split", f"write each split as INITIAL/TASKS (split=20/5,50/6), got {values!r}")
        wanted.setdefault(axis, set()).update(p for p in parts if p)
    return wanted


def select(trials: Iterable[TrialSpec], wanted: dict[str, set[str]]) -> list[TrialSpec]:
    """The trials whose every named axis takes one of the wanted values; none is bad input."""
    trials = list(trials)
    if not wanted:
        return trials
    chosen = [t for t in trials if all(_axis_value(t, axis) in values for axis, values in wanted.items())]
    if not chosen:
        present = {axis: sorted({_axis_value(t, axis) for t in trials}) for axis in wanted}
        have = "; ".join(f"{axis}: {', '.join(vals)}" for axis, vals in present.items())
        asked = " ".join(f"{axis}={','.join(sorted(v))}" for axis, v in wanted.items())
        raise SweepError("--only", None, f"{asked} matches none of the sweep's {len(trials)} trials (the sweep has {have})")
    return chosen
