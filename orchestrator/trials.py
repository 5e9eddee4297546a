"""Grid cells -> resolved, checked trials whose id is ``cil_core``'s fingerprint (no Ray, no torch).

Every trial's config is resolved here, in the driver, by ``cil_core.config`` itself, and the trial
receives it as is. Its id, ``<approach>_<dataset>_<scenario>_<initial>-<tasks>_s<seed>_<fingerprint>``,
changes exactly when what the trial computes changes (restating a default changes none) and names
its folder, so a rerun finds finished work even if the sweep file grew, shrank or was reordered.
Resolution is lazy, once per distinct config-without-seed, so a million-trial grid is checked in
bounded memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from cil_core.approach_options import approach_names
from cil_core.config import RunConfig, build_config, fingerprint, fingerprints_by_seed, resolve_config
from cil_core.errors import UserError
from cil_core.registry import dataset_names

from . import schema
from .errors import InvalidTrials, SweepError
from .sweep import Cell, cells, option_blocks

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
AXES = ("dataset", "scenario", "split", "approach", "seed")  # what --only selects on
SHOWN_PER_PROBLEM = 3  # trials named in one problem line; the rest are counted


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its resolved ``config`` (``RunConfig.to_dict()``), what it asks Ray for,
    and ``variant``, the grid entry it came from (the table row: an approach or a named variant)."""

    id: str
    variant: str
    config: dict[str, Any]
    resources: dict[str, float]
    hours: float | None = None
    search: str | None = None  # the search group a sampled trial belongs to
    params: dict[str, Any] = field(default_factory=dict)  # sampled search parameters
    given: dict[str, Any] = field(default_factory=dict)  # a search's base: the options as written (samples re-resolve)

    # the grid axes, read from the resolved config
    dataset = property(lambda self: self.config["dataset"])
    scenario = property(lambda self: self.config["scenario"])
    approach = property(lambda self: self.config["approach"])
    split = property(lambda self: (int(self.config["initial_classes"]), int(self.config["total_tasks"])))
    seed = property(lambda self: int(self.config.get("seed", 0)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TrialSpec":
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values.setdefault("variant", data.get("row") or data["config"]["approach"])  # sweep.json of before the rename
        return cls(**values)


def id_prefix(c: Mapping[str, Any]) -> str:
    return _SAFE.sub("-", f"{c['approach']}_{c['dataset']}_{c['scenario']}_{c['initial_classes']}-{c['total_tasks']}")


def trial_id(config: RunConfig) -> str:
    """The id of a trial running the resolved ``config``."""
    return f"{id_prefix(config.to_dict())}_s{config.seed}_{fingerprint(config)}"


def resolve(values: Mapping[str, Any]) -> RunConfig:
    """A sweep's options (flat keys, ``APPROACH.OPTION``, axes) -> the resolved RunConfig."""
    return resolve_config(build_config(values))


def _resolve_cell(cell: Cell) -> tuple[dict[str, Any], str, Callable[[int], str]] | str:
    """``(resolved config, id prefix, seed -> fingerprint)`` of a cell, or why it cannot run."""
    try:
        config = resolve({**cell.options, **cell.axes, "seed": 0})
        return config.to_dict(), id_prefix(config.to_dict()), fingerprints_by_seed(config)
    except Exception as exc:  # noqa: BLE001 - a cil_core bug must not look like a traceback here either
        return str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"


def iter_trials(sweep: schema.Sweep, *, where: str = "<sweep>", set_values: Mapping[str, Any] | None = None,
                resources: Mapping[str, float] | None = None,
                drop_approaches: Iterable[str] = ()) -> Iterator[TrialSpec]:
    """The sweep's trials, lazily, in grid order; :class:`InvalidTrials` at the end if any
    cell cannot be resolved (iterate to the end before trusting what came out)."""
    cache: dict[tuple, Any] = {}  # cell key -> resolved or the problem: each config-without-seed resolves once
    problems: dict[str, list[str]] = {}  # message -> the first cells it applies to
    counts: Counter = Counter()
    for cell in cells(sweep, where=where, set_values=set_values, resources=resources, drop_approaches=drop_approaches):
        if cell.key not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[cell.key] = _resolve_cell(cell)
        found, a = cache[cell.key], cell.axes
        if isinstance(found, str):
            counts[found] += 1
            named = problems.setdefault(found, [])
            described = f"{a['dataset']} {a['scenario']} {a['initial_classes']}/{a['total_tasks']} {cell.variant.name}"
            if len(named) <= SHOWN_PER_PROBLEM and described not in named:
                named.append(described)
            continue
        data, prefix, hash_of = found
        seed = int(a["seed"])
        yield TrialSpec(id=f"{prefix}_s{seed}_{hash_of(seed)}", variant=cell.variant.name,
                        config={**data, "seed": seed}, resources=cell.resources, hours=cell.hours,
                        given={**cell.options, **a} if sweep.search is not None else {})
    if problems:  # one line per distinct problem, naming up to three of its trials
        raise InvalidTrials("\n".join(
            f"{where}: {message} ({counts[message]} trials: {', '.join(named[:SHOWN_PER_PROBLEM])}"
            f"{', ...' if len(named) > SHOWN_PER_PROBLEM else ''})" for message, named in problems.items()))


def expand(sweep: schema.Sweep, **kwargs: Any) -> list[TrialSpec]:
    """Every trial of the sweep, checked (see :func:`iter_trials`)."""
    return list(iter_trials(sweep, **kwargs))


def check_sweep(sweep: schema.Sweep, *, where: str, set_values: Mapping[str, Any] | None = None) -> list[str]:
    """Names and every option block against ``cil_core`` (first problem raised, located by
    block and key); returns the approaches ``skip_missing_approaches`` leaves out."""
    datasets = [*sweep.grid.dataset, *(d for m in sweep.include for d in m.dataset or [])]
    _missing(where, "grid.dataset", "data set", datasets, dataset_names())
    dropped = _missing(where, "grid.approach", "approach", [v.approach for v in sweep.grid.approach], approach_names(),
                       allowed=sweep.skip_missing_approaches)
    base = {"dataset": sweep.grid.dataset[0], "scenario": sweep.grid.scenario[0], "initial_classes": 1,
            "total_tasks": 1, "approach": sweep.grid.approach[0].approach}
    blocks = option_blocks(sweep) + ([("--set", dict(set_values), {})] if set_values else [])
    if sweep.search is not None:
        blocks.append(("search.space", {k: d.args[0] for k, d in sweep.search.space.items()}, {}))  # a value in range
    known = {a.lower() for a in approach_names()}
    for block, options, pattern in blocks:
        for key, value in options.items():
            if "." in key and key.split(".", 1)[0].lower() not in known:
                continue  # another approach's option, one cil_core lacks: it does nothing
            try:
                build_config({**base, **pattern, key: value})
            except UserError as exc:
                located = ("--set", key) if block == "--set" else (where, f"{block}.{key}")
                raise SweepError(*located, str(exc)) from None
    return dropped


def _missing(where: str, key: str, kind: str, names: Sequence[str], known: Sequence[str],
             allowed: bool = False) -> list[str]:
    """The names cil_core lacks (bad input unless ``allowed``; a name in another case always is: ids hash it)."""
    lower = {k.lower(): k for k in known}
    missing = [name for name in dict.fromkeys(names) if name not in known]
    for name in missing:
        if name.lower() in lower:
            raise SweepError(where, key, f"{name!r}: write it {lower[name.lower()]!r}, as cil_core spells it "
                                         "(ids hash the name)")
    if missing and not allowed:
        raise SweepError(where, key, f"cil_core has no {kind} {', '.join(map(repr, missing))}"
                                     f"{' yet' if kind == 'approach' else ''} (it has: {', '.join(known)})")
    return missing


def _axis_value(spec: TrialSpec, axis: str) -> str:
    """What ``--only`` compares: the split as ``20/5``, the approach as its row name."""
    return {"split": "{0}/{1}".format(*spec.split), "approach": spec.variant}.get(axis) or str(spec.config[axis])


def parse_only(items: Sequence[str]) -> dict[str, set[str]]:
    """``--only``: ``["seed=0", "split=20/5,50/6"]`` -> ``{"seed": {"0"}, "split": {"20/5", "50/6"}}``."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        axis, sep, values = (s.strip() for s in item.partition("="))
        if not sep or not values:
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
    chosen = [t for t in trials if all(_axis_value(t, axis) in values for axis, values in wanted.items())]
    if not chosen:
        have = "; ".join(f"{axis}: {', '.join(sorted({_axis_value(t, axis) for t in trials}))}" for axis in wanted)
        asked = " ".join(f"{axis}={','.join(sorted(v))}" for axis, v in wanted.items())
        raise SweepError("--only", None, f"{asked} matches none of the sweep's {len(trials)} trials "
                                         f"(the sweep has {have})")
    return chosen


def axis_counts(trials: Iterable[TrialSpec]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {axis: Counter() for axis in AXES}
    for t in trials:
        for axis, value in zip(AXES, (t.dataset, t.scenario, f"{t.split[0]} {t.split[1]}", t.variant, t.seed)):
            counts[axis][value] += 1
    return counts


def estimate_hours(trials: Iterable[TrialSpec]) -> dict[str, float | int]:
    """Sum of the per-trial hours: ``gpu_hours`` (hours x GPUs asked), ``cpu_hours`` for
    GPU-less trials, ``unknown``: trials with no estimate. A trial's hours are the sweep file's
    ``hours`` where given, else :func:`cil_core.cost_model.trial_hours` of its resolved config."""
    from cil_core.config import config_from_dict
    from cil_core.cost_model import trial_hours

    out = {"gpu_hours": 0.0, "cpu_hours": 0.0, "trial_hours": 0.0, "unknown": 0}
    for t in trials:
        gpu = t.resources.get("gpu", 0) > 0
        hours = t.hours if t.hours is not None else trial_hours(config_from_dict(t.config), "gpu" if gpu else "cpu")
        if hours is None:
            out["unknown"] += 1
            continue
        out["trial_hours"] += hours
        out["gpu_hours" if gpu else "cpu_hours"] += hours * (t.resources["gpu"] if gpu else t.resources.get("cpu", 1))
    return out


def search_group_id(base: TrialSpec, search: schema.Search) -> str:
    """Names one search (a base trial x a search block): a changed space is a new search."""
    payload = json.dumps({"base": base.id, "search": search.model_dump(mode="json")}, sort_keys=True)
    return f"search_{base.id.rsplit('_', 1)[0]}_{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def sampled_trial(base: TrialSpec, params: Mapping[str, Any], group: str | None) -> TrialSpec:
    """A search sample: the base trial's options as written plus the sampled ones, resolved."""
    config = resolve({**(base.given or base.config), **params})
    return dataclasses.replace(base, id=trial_id(config), config=config.to_dict(), params=dict(params), search=group)
