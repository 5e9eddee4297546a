"""Sweep YAML -> explicit, hashed trials (no Ray, no torch).

A trial's id is a content hash of its canonical config (the keys that change what a run
computes: everything but paths and placement), prefixed by its axes so a folder listing
reads well: ``dgr_cifar100_lt_5-20_s0_1a2b3c4d5e``. The id names the trial's folder,
``results/trials/<id>/``, so a rerun recognises finished work even if the sweep file grew,
shrank or was reordered; change an option and the affected trials get new ids.

Precedence of training options, later wins: ``defaults`` < ``datasets.<d>.set`` <
``approaches.<a>.set`` < the grid variant's ``set`` < matching ``overrides`` (in order) <
``--set`` on the command line < the grid axes themselves.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from . import schema
from .errors import SweepError

# Keys that do not change what a run computes (paths, placement, loader workers). They are
# left out of the id, as ``cil_core``'s own fingerprint leaves them out, so moving the data
# or the results, or running on another device kind, still finds the finished trials.
NON_SEMANTIC_KEYS = ("out", "data_root", "device", "num_workers", "eval_batch_size", "checkpoint")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: what to run (``config``, a flat ``RunConfig`` mapping) and what it asks for."""

    id: str
    row: str  # the table row: the approach, or a grid variant's name
    config: dict[str, Any]
    resources: dict[str, float]
    hours: float | None = None
    search: str | None = None  # the search group a sampled trial belongs to
    params: dict[str, Any] = field(default_factory=dict)  # sampled search parameters

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def scenario(self) -> str:
        return self.config["scenario"]

    @property
    def split(self) -> tuple[int, int]:
        return (int(self.config["initial_classes"]), int(self.config["total_tasks"]))

    @property
    def approach(self) -> str:
        return self.config["approach"]

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    def axes(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "scenario": self.scenario,
            "initial_classes": self.split[0],
            "total_tasks": self.split[1],
            "approach": self.approach,
            "seed": self.seed,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "row": self.row,
            "config": self.config,
            "resources": self.resources,
            "hours": self.hours,
            "search": self.search,
            "params": self.params,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TrialSpec":
        return cls(
            id=data["id"],
            row=data.get("row") or data["config"]["approach"],
            config=dict(data["config"]),
            resources=dict(data.get("resources") or {}),
            hours=data.get("hours"),
            search=data.get("search"),
            params=dict(data.get("params") or {}),
        )


# ----------------------------------------------------------------------------- ids


def _canonical_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    return str(value)


def normalise_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flat keys plus ``options: {approach: {...}}`` for the trial's own approach only.

    ``dgr.dakd: false`` and ``options: {dgr: {dakd: false}}`` are the same thing; options
    of other approaches (say a ``defaults`` entry ``dgr.kd_base`` in a finetune trial) do
    nothing and are dropped, so they do not split one computation into two ids.
    """
    approach = str(config.get("approach", ""))
    flat: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in config.items():
        if key == "options":
            for name, opts in (value or {}).items():
                if str(name).lower() == approach.lower():
                    options.update(opts or {})
        elif "." in key:
            name, option = key.split(".", 1)
            if name.lower() == approach.lower():
                options[option] = value
        else:
            flat[key] = value
    out = {k: flat[k] for k in sorted(flat)}
    if options:
        out["options"] = {approach: {k: options[k] for k in sorted(options)}}
    return out


def canonical_json(config: Mapping[str, Any]) -> str:
    semantic = {k: v for k, v in normalise_config(config).items() if k not in NON_SEMANTIC_KEYS}
    return json.dumps(_canonical_value(semantic), sort_keys=True, separators=(",", ":"))


def trial_id(config: Mapping[str, Any]) -> str:
    """``<approach>_<dataset>_<scenario>_<initial>-<tasks>_s<seed>_<sha256[:10]>``."""
    digest = hashlib.sha256(canonical_json(config).encode()).hexdigest()[:10]
    c = _canonical_value(dict(config))
    prefix = "_".join(
        str(part)
        for part in (c["approach"], c["dataset"], c["scenario"], f"{c['initial_classes']}-{c['total_tasks']}", f"s{c.get('seed', 0)}")
    )
    return f"{_SAFE.sub('-', prefix)}_{digest}"


# ----------------------------------------------------------------------------- loading


def _describe_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (``list[X]``, ``dict[str, X]``, ``X | None``)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the model that the unknown key at ``loc`` sits in."""
    model: type[BaseModel] | None = schema.Sweep
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if str(part) in model.model_fields:
            model = _model_in(model.model_fields[str(part)].annotation)
        # else: a dict key such as datasets.<name>; the value's model is already current
    return list(model.model_fields) if model is not None else None


def format_validation_error(exc: ValidationError, where: str) -> SweepError:
    """The first problem pydantic found, as ``<file>: <dotted.key>: <problem>``."""
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        hint = f" (allowed here: {', '.join(allowed)})" if allowed else ""
        message = f"unknown key{hint}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("too_short", "list_too_short", "dict_too_short") or (kind == "too_short"):
        message = "is empty: list at least one value"
    elif "input" in err and kind.endswith(("_type", "_parsing")):
        message = f"{message}, got {err['input']!r}"
    if not loc and ": " in message:
        key, problem = message.split(": ", 1)
        return SweepError(where, key, problem)
    return SweepError(where, _describe_loc(loc) or None, message)


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
    for key in data:
        if not isinstance(key, str):
            raise SweepError(where, str(key), "keys must be strings")
    try:
        return schema.Sweep.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None


def load_sweep(path: str | Path) -> schema.Sweep:
    path = Path(path)
    if not path.is_file():
        raise SweepError(str(path), None, "no such sweep file")
    return load_sweep_text(path.read_text(), str(path))


def parse_set_items(items: Iterable[str], where: str = "--set") -> dict[str, Any]:
    """``["lr=0.05", "dgr.dakd=false", "lr_milestones=[3,5]"]`` -> typed values (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SweepError(where, item, "expected KEY=VALUE, e.g. --set data_root=/data/tiny")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise SweepError(where, item, "expected KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict,)) or key in ("data_root", "out", "device"):
            value = raw  # paths and names stay strings
        try:
            schema._check_options({key: value})
        except ValueError as exc:
            raise SweepError(where, key, str(exc)) from None
        out[key] = schema.normalise_scalar(value)
    return out


def parse_resources(text: str | None, where: str = "--resources") -> dict[str, float]:
    """``gpu=0,cpu=2`` -> ``{"gpu": 0.0, "cpu": 2.0}`` (checked like the sweep's ``resources``)."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        if "=" not in part:
            raise SweepError(where, part, "expected gpu=N,cpu=N")
        key, value = (s.strip() for s in part.split("=", 1))
        out[key] = value
    try:
        model = schema.Resources.model_validate(out)
    except ValidationError as exc:
        raise format_validation_error(exc, where) from None
    return {k: float(v) for k, v in model.model_dump().items() if v is not None}


# ----------------------------------------------------------------------------- expansion


def _absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Trials never use the working directory Ray gives them: paths become absolute here."""
    root = config.get("data_root")
    if isinstance(root, str) and root and "://" not in root:
        config["data_root"] = str(Path(root).expanduser().resolve())
    return config


def _merge_resources(base: dict[str, float], layer: schema.Resources | dict[str, float] | None) -> dict[str, float]:
    if layer is None:
        return base
    values = layer.model_dump() if isinstance(layer, schema.Resources) else layer
    return {**base, **{k: float(v) for k, v in values.items() if v is not None}}


def _axes_of(variant: schema.ApproachVariant, dataset: str, scenario: str, split: schema.Split, seed: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "scenario": scenario,
        "initial_classes": split.initial_classes,
        "total_tasks": split.total_tasks,
        "approach": variant.approach,
        "seed": seed,
    }


def _cells(sweep: schema.Sweep) -> list[tuple[schema.ApproachVariant, dict[str, Any]]]:
    """Grid product minus ``exclude``, plus ``include``; first occurrence wins."""
    grid = sweep.grid
    variants = grid.variants()
    by_name = {v.name: v for v in variants}
    cells: dict[tuple, tuple[schema.ApproachVariant, dict[str, Any]]] = {}
    for dataset, scenario, split, variant, seed in itertools.product(grid.dataset, grid.scenario, grid.split, variants, grid.seed):
        axes = _axes_of(variant, dataset, scenario, split, seed)
        if any(rule.matches(axes, (variant.name, variant.approach)) for rule in sweep.exclude):
            continue
        cells.setdefault((dataset, scenario, split.pair, variant.name, seed), (variant, axes))
    for rule in sweep.include:
        inc_variants = [by_name.get(a) or schema.ApproachVariant(name=a, approach=a) for a in rule.approach] if rule.approach else variants
        for dataset, scenario, split, variant, seed in itertools.product(
            rule.dataset or grid.dataset, rule.scenario or grid.scenario, rule.split or grid.split, inc_variants, rule.seed or grid.seed
        ):
            axes = _axes_of(variant, dataset, scenario, split, seed)
            cells.setdefault((dataset, scenario, split.pair, variant.name, seed), (variant, axes))
    return list(cells.values())


def option_blocks(sweep: schema.Sweep) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every block of training options with a matching pattern (for validation):
    ``(where, options, {"dataset": ..., "approach": ...})``."""
    blocks: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("defaults", dict(sweep.defaults), {})]
    for name, over in sweep.datasets.items():
        blocks.append((f"datasets.{name}.set", dict(over.set), {"dataset": name}))
    variants = {v.name: v for v in sweep.grid.variants()}
    for name, over in sweep.approaches.items():
        approach = variants[name].approach if name in variants else name
        blocks.append((f"approaches.{name}.set", dict(over.set), {"approach": approach}))
    for variant in sweep.grid.variants():
        if variant.set:
            index = [v.name for v in sweep.grid.variants()].index(variant.name)
            blocks.append((f"grid.approach.{index}.set", dict(variant.set), {"approach": variant.approach}))
    for i, rule in enumerate(sweep.overrides):
        pattern: dict[str, Any] = {}
        if rule.match.dataset:
            pattern["dataset"] = rule.match.dataset[0]
        if rule.match.approach:
            pattern["approach"] = variants[rule.match.approach[0]].approach if rule.match.approach[0] in variants else rule.match.approach[0]
        blocks.append((f"overrides.{i}.set", dict(rule.set), pattern))
    return blocks


def expand(
    sweep: schema.Sweep,
    *,
    where: str = "<sweep>",
    set_values: Mapping[str, Any] | None = None,
    resources: Mapping[str, float] | None = None,
    drop_approaches: Iterable[str] = (),
) -> list[TrialSpec]:
    """The sweep's trials, in grid order (data set, scenario, split, approach, seed).

    ``set_values``: ``--set`` options (applied to every trial, after the sweep's own);
    ``resources``: ``--resources`` (overrides every trial's request);
    ``drop_approaches``: approaches to leave out (``skip_missing_approaches``).
    Raises :class:`SweepError` when nothing is left to run.
    """
    set_values = dict(set_values or {})
    for key in sweep.requires:
        if key not in set_values and key not in sweep.defaults:
            raise SweepError(where, f"requires.{key}", f"give it on the command line, e.g. --set {key}=/path/to/it")
    dropped = set(drop_approaches)
    base_resources = _merge_resources({"gpu": 1.0, "cpu": 1.0}, sweep.resources)
    trials: list[TrialSpec] = []
    seen: set[tuple[str, str]] = set()
    for variant, axes in _cells(sweep):
        if variant.approach in dropped:
            continue
        names = (variant.name, variant.approach)
        config: dict[str, Any] = dict(sweep.defaults)
        res = dict(base_resources)
        hours: float | None = None
        factor = 1.0
        if axes["dataset"] in sweep.datasets:
            over = sweep.datasets[axes["dataset"]]
            config.update(over.set)
            res = _merge_resources(res, over.resources)
            hours = over.hours
        for name in dict.fromkeys((variant.approach, variant.name)):
            if name in sweep.approaches:
                over_a = sweep.approaches[name]
                config.update(over_a.set)
                res = _merge_resources(res, over_a.resources)
                factor *= over_a.hours_factor
        config.update(variant.set)
        for rule in sweep.overrides:
            if rule.match.matches(axes, names):
                config.update(rule.set)
                res = _merge_resources(res, rule.resources)
                if rule.hours is not None:
                    hours, factor = rule.hours, 1.0
        config.update(set_values)
        config.update(axes)
        config = _absolute_paths(normalise_config(config))
        res = _merge_resources(res, dict(resources or {}))
        spec = TrialSpec(
            id=trial_id(config),
            row=variant.name,
            config=config,
            resources=res,
            hours=None if hours is None else hours * factor,
        )
        if (spec.id, spec.row) in seen:
            continue
        seen.add((spec.id, spec.row))
        trials.append(spec)
    if not trials:
        key = "exclude" if sweep.exclude else ("grid.approach" if dropped else "grid")
        reason = "after exclude" if sweep.exclude else ("after leaving out approaches cil_core lacks" if dropped else "")
        raise SweepError(where, key, f"the grid expands to 0 trials {reason}".strip())
    return trials


# ----------------------------------------------------------------------------- summaries


def axis_counts(trials: Iterable[TrialSpec]) -> dict[str, Counter]:
    trials = list(trials)
    return {
        "dataset": Counter(t.dataset for t in trials),
        "scenario": Counter(t.scenario for t in trials),
        "split": Counter(f"{t.split[0]} {t.split[1]}" for t in trials),
        "approach": Counter(t.row for t in trials),
        "seed": Counter(t.seed for t in trials),
    }


def estimate_hours(trials: Iterable[TrialSpec]) -> dict[str, float | int]:
    """Sum of the per-trial hours: ``gpu_hours`` (hours x GPUs asked), ``cpu_hours`` for
    GPU-less trials, ``unknown``: trials whose data set gives no ``hours``."""
    gpu_hours = cpu_hours = wall = 0.0
    unknown = 0
    for t in trials:
        if t.hours is None:
            unknown += 1
            continue
        wall += t.hours
        if t.resources.get("gpu", 0) > 0:
            gpu_hours += t.hours * t.resources["gpu"]
        else:
            cpu_hours += t.hours * t.resources.get("cpu", 1)
    return {"gpu_hours": gpu_hours, "cpu_hours": cpu_hours, "trial_hours": wall, "unknown": unknown}


def sweep_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def search_group_id(base: TrialSpec, search: schema.Search) -> str:
    """Names one search (a base trial x a search block): a changed space is a new search."""
    payload = json.dumps({"base": canonical_json(base.config), "search": search.model_dump(mode="json")}, sort_keys=True)
    return f"search_{base.id.rsplit('_', 1)[0]}_{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def default_results_dir(sweep: schema.Sweep) -> str:
    return str(Path("results") / sweep.name)
