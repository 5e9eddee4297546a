"""Sweep YAML -> the grid's cells: the axes and the options each cell sets (no Ray, no torch).

Precedence of training options, later wins: ``defaults`` < ``datasets.<d>.set`` <
``approaches.<a>.set`` < the grid variant's ``set`` < matching ``overrides`` (in order) <
``--set`` on the command line < the grid axes themselves. The options stay as written here;
:mod:`orchestrator.trials` resolves them with ``cil_core`` into trials.
"""

from __future__ import annotations

import itertools
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from . import schema
from .errors import SweepError


@dataclass(frozen=True)
class Cell:
    """One grid point: its axes, the options the sweep sets there, what it asks Ray for; cells with
    the same ``key`` (its axes but the seed, unless an override matches seeds) share those options."""

    key: tuple
    variant: schema.ApproachVariant
    axes: dict[str, Any]
    options: dict[str, Any]
    resources: dict[str, float]
    hours: float | None


MESSAGES = {"extra_forbidden": "unknown key", "missing": "required key is missing",
            "too_short": "is empty: list at least one value"}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``list[X]``, ``dict[str, X]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)


def format_validation_error(exc: ValidationError, where: str) -> SweepError:
    """The first problem pydantic found, as ``<file>: <dotted.key>: <problem>``."""
    err = exc.errors()[0]
    loc, kind = tuple(err.get("loc", ())), err.get("type", "")
    message = MESSAGES.get(kind) or str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":  # name the keys allowed where the unknown one sits
        model: type[BaseModel] | None = schema.Sweep
        for part in loc[:-1]:  # a dict key (datasets.<name>) or a list index keeps the model
            if model is not None and str(part) in model.model_fields:
                model = _model_in(model.model_fields[str(part)].annotation)
        message += f" (allowed here: {', '.join(model.model_fields)})" if model is not None else ""
    elif "input" in err and kind.endswith(("_type", "_parsing")):
        message = f"{message}, got {err['input']!r}"
    if not loc and ": " in message:
        return SweepError(where, *message.split(": ", 1))
    return SweepError(where, ".".join(map(str, loc)) or None, message)


def load_sweep_text(text: str, where: str) -> schema.Sweep:
    """Parse (``yaml.safe_load``: nothing is evaluated) and validate one sweep file's text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else None
        raise SweepError(where, line, f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise SweepError(where, None, "a sweep file is a mapping with at least 'name' and 'grid'")
    if bad := [key for key in data if not isinstance(key, str)]:
        raise SweepError(where, str(bad[0]), "keys must be strings")
    try:
        return schema.Sweep.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None


def load_sweep(path: str | Path) -> schema.Sweep:
    path = Path(path)
    if not path.is_file():
        raise SweepError(str(path), None, "no such sweep file")
    return load_sweep_text(path.read_text(), str(path))


def parse_resources(text: str | None, where: str = "--resources") -> dict[str, float]:
    """``gpu=0,cpu=2`` -> ``{"gpu": 0.0, "cpu": 2.0}`` (checked like the sweep's ``resources``)."""
    if not text:
        return {}
    if bad := [part for part in text.split(",") if "=" not in part]:
        raise SweepError(where, bad[0], "expected gpu=N,cpu=N")
    out = dict((s.strip() for s in part.split("=", 1)) for part in text.split(","))
    try:
        model = schema.Resources.model_validate(out)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None
    return {k: float(v) for k, v in model.model_dump().items() if v is not None}


def _merge_resources(base: dict[str, float], layer: schema.Resources | Mapping[str, float] | None) -> dict[str, float]:
    values = layer.model_dump() if isinstance(layer, schema.Resources) else layer or {}
    return {**base, **{k: float(v) for k, v in values.items() if v is not None}}


def _points(sweep: schema.Sweep) -> Iterator[tuple[schema.ApproachVariant, dict[str, Any]]]:
    """Grid product minus ``exclude``, then ``include``; first occurrence wins."""
    grid, seen = sweep.grid, set()
    by_name = {v.name: v for v in grid.approach}

    def product(datasets, scenarios, splits, variants, seeds, excluding: bool):
        for dataset, scenario, split, variant, seed in itertools.product(datasets, scenarios, splits, variants, seeds):
            axes = {"dataset": dataset, "scenario": scenario, "initial_classes": split.initial_classes,
                    "total_tasks": split.total_tasks, "approach": variant.approach, "seed": seed}
            if excluding and any(rule.matches(axes, (variant.name, variant.approach)) for rule in sweep.exclude):
                continue
            if sweep.include:  # only an include can repeat a grid point
                if (key := (dataset, scenario, split.pair, variant.name, seed)) in seen:
                    continue
                seen.add(key)
            yield variant, axes

    yield from product(grid.dataset, grid.scenario, grid.split, grid.approach, grid.seed, True)
    for rule in sweep.include:
        variants = [by_name.get(a) or schema.ApproachVariant(name=a, approach=a) for a in rule.approach or []]
        yield from product(rule.dataset or grid.dataset, rule.scenario or grid.scenario, rule.split or grid.split,
                           variants or grid.approach, rule.seed or grid.seed, False)


def cells(sweep: schema.Sweep, *, where: str = "<sweep>", set_values: Mapping[str, Any] | None = None,
          resources: Mapping[str, float] | None = None, drop_approaches: Iterable[str] = ()) -> Iterator[Cell]:
    """The sweep's cells, lazily, in grid order (data set, scenario, split, approach, seed), with ``--set``
    (``set_values``), ``--resources`` and without ``drop_approaches``; :class:`SweepError` if none is left."""
    set_values = dict(set_values or {})
    for key in sweep.requires:
        if key not in set_values and key not in sweep.defaults:
            raise SweepError(where, f"requires.{key}", f"give it on the command line, e.g. --set {key}=/path/to/it")
    dropped = set(drop_approaches)
    base_resources = _merge_resources({"gpu": 1.0, "cpu": 1.0}, sweep.resources)
    cache: dict[tuple, tuple[dict[str, Any], dict[str, float], float | None]] = {}
    seed_rules = any(rule.match.seed is not None for rule in sweep.overrides)
    count = 0
    for variant, axes in _points(sweep):
        if variant.approach in dropped:
            continue
        key = (*(axes[k] for k in ("dataset", "scenario", "initial_classes", "total_tasks")), variant.name,
               axes["seed"] if seed_rules else None)
        if key not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = _layers(sweep, variant, axes, base_resources, set_values, resources)
        options, res, hours = cache[key]
        count += 1
        yield Cell(key=key, variant=variant, axes=axes, options=options, resources=res, hours=hours)
    if not count:
        key, reason = (("exclude", " after exclude") if sweep.exclude else ("grid", "") if not dropped
                       else ("grid.approach", " after leaving out approaches cil_core lacks"))
        raise SweepError(where, key, f"the grid expands to 0 trials{reason}")


def _layers(sweep: schema.Sweep, variant: schema.ApproachVariant, axes: dict[str, Any],
            base_resources: dict[str, float], set_values: dict[str, Any],
            resources: Mapping[str, float] | None) -> tuple[dict[str, Any], dict[str, float], float | None]:
    """The options, resources and hours of one cell, layer by layer (see the module docstring)."""
    options, res, hours, factor = dict(sweep.defaults), dict(base_resources), None, 1.0
    approaches = [sweep.approaches[n] for n in dict.fromkeys((variant.approach, variant.name)) if n in sweep.approaches]
    rules = [r for r in sweep.overrides if r.match.matches(axes, (variant.name, variant.approach))]
    layers = [sweep.datasets.get(axes["dataset"]), *approaches, variant, *rules]
    for layer in filter(None, layers):
        options.update(layer.set)
        res = _merge_resources(res, getattr(layer, "resources", None))
        factor *= getattr(layer, "hours_factor", 1.0)
        if getattr(layer, "hours", None) is not None:  # the data set's estimate, or a rule's that replaces it
            hours, factor = layer.hours, 1.0
    options.update(set_values)
    return options, _merge_resources(res, dict(resources or {})), None if hours is None else hours * factor


def option_blocks(sweep: schema.Sweep) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every block of training options with a matching pattern (for validation):
    ``(where, options, {"dataset": ..., "approach": ...})``."""
    approach_of = {v.name: v.approach for v in sweep.grid.approach}
    blocks = [("defaults", dict(sweep.defaults), {})]
    blocks += [(f"datasets.{name}.set", dict(over.set), {"dataset": name}) for name, over in sweep.datasets.items()]
    blocks += [(f"approaches.{name}.set", dict(over.set), {"approach": approach_of.get(name, name)})
               for name, over in sweep.approaches.items()]
    blocks += [(f"grid.approach.{i}.set", dict(v.set), {"approach": v.approach})
               for i, v in enumerate(sweep.grid.approach) if v.set]
    for i, rule in enumerate(sweep.overrides):
        pattern = {"dataset": rule.match.dataset[0]} if rule.match.dataset else {}
        if rule.match.approach:
            pattern["approach"] = approach_of.get(rule.match.approach[0], rule.match.approach[0])
        blocks.append((f"overrides.{i}.set", dict(rule.set), pattern))
    return blocks
