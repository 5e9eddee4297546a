"""The declared ranges (cil_core.ranges): every number of the run config and of every approach's
options has one, and resolving a config refuses a value just outside it, naming the key."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from cil_core.config import RunConfig, build_config, resolve_config
from cil_core.errors import ConfigError
from cil_core.ranges import RUN_RANGES, Range, option_ranges
from cil_core.registry import get_method, method_names

BASE = {"dataset": "synthetic", "approach": "finetune", "scenario": "lt", "initial_classes": 10, "total_tasks": 2}


def _numeric(annotation) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    return any(a in (int, float) or typing.get_origin(a) is tuple for a in args)


def _flatten(annotation) -> set:
    args = typing.get_args(annotation)
    return {annotation} if not args else set().union(*(_flatten(a) for a in args))


def just_outside(spec: Range, annotation):
    """A value the range refuses, of the field's type (bad choice, below low, at an open bound)."""
    if spec.choices is not None:
        return "not-a-choice"
    is_int = int in _flatten(annotation)
    if spec.low is not None:
        return spec.low if spec.low_open else spec.low - (1 if is_int else 0.5)
    return spec.high if spec.high_open else spec.high + 1


def test_run_ranges_name_run_config_fields_and_cover_its_numbers():
    hints = typing.get_type_hints(RunConfig)
    assert set(RUN_RANGES) <= set(hints)
    unranged = {k for k, t in hints.items() if _numeric(t)} - set(RUN_RANGES)
    assert unranged == set(), f"RunConfig numbers without a declared range: {unranged}"


@pytest.mark.parametrize("approach", method_names())
def test_every_numeric_option_declares_a_range(approach):
    options = get_method(approach).Options
    hints = typing.get_type_hints(options)
    numeric = {f.name for f in dataclasses.fields(options) if _numeric(hints[f.name]) or f.name in option_ranges(options)}
    assert numeric <= set(option_ranges(options)), f"{approach}: options without a range: {numeric - set(option_ranges(options))}"
    # The defaults (the papers' values) are inside their own ranges.
    resolve_config(build_config({**BASE, "approach": approach}))


def _option_cases():
    for approach in method_names():
        options = get_method(approach).Options
        hints = typing.get_type_hints(options)
        for key, spec in option_ranges(options).items():
            yield pytest.param(approach, key, spec, hints[key], id=f"{approach}.{key}")


@pytest.mark.parametrize("approach, key, spec, annotation", list(_option_cases()))
def test_option_just_outside_its_range_is_refused_at_resolve(approach, key, spec, annotation):
    value = just_outside(spec, annotation)
    if typing.get_origin(annotation) is tuple or tuple in [typing.get_origin(a) for a in typing.get_args(annotation)]:
        value = [value]
    with pytest.raises(ConfigError) as err:
        resolve_config(build_config({**BASE, "approach": approach, f"{approach}.{key}": value}))
    message = str(err.value)
    assert message.startswith(f"{approach}.{key} must be {spec.describe()}") or message.startswith(
        f"every item of {approach}.{key} must be {spec.describe()}"
    ), message


@pytest.mark.parametrize("key", sorted(k for k in RUN_RANGES if k not in ("initial_classes", "total_tasks")))
def test_run_value_just_outside_its_range_is_refused_at_resolve(key):
    spec = RUN_RANGES[key]
    annotation = typing.get_type_hints(RunConfig)[key]
    value = just_outside(spec, annotation)
    if key == "lr_milestones":
        value = [value]
    with pytest.raises(ConfigError, match=rf"^(every item of )?{key} must be "):
        resolve_config(build_config({**BASE, key: value}))


def test_range_messages_by_hand():
    assert Range(0, low_open=True).describe() == "> 0"
    assert Range(0, 1, high_open=True).describe() == "in [0, 1)"
    assert Range(choices=("nca", "ce")).describe() == "one of nca, ce"
    assert not Range(0, low_open=True).accepts(float("nan")) and not Range().accepts(float("inf"))
    assert Range(1).accepts(None) and Range(1).accepts((1, 2)) and not Range(1).accepts((1, 0))
