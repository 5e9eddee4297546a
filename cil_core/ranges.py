"""Valid ranges of the run config's numbers and of every approach's options, checked in one place.

A value out of range must be refused when the config is resolved, before anything is
written or trained (``--set dgr.temperature=0`` used to train a whole task before failing).
The ranges are data, not code: :data:`RUN_RANGES` for :class:`~cil_core.config.RunConfig`'s
keys, and the field metadata of each approach's ``Options`` dataclass (declared with
:func:`ranged`, :func:`positive`, :func:`at_least`, :func:`one_of`), so one function,
:func:`check_ranges`, checks all of them and a new option states its range where it is
declared. Torch-free, so the orchestrator's pre-check can use it too.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError

RANGE_KEY = "range"


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where ``*_open``), every number finite, or one of ``choices``.

    ``None`` always passes (it means "the default"); a tuple passes when each item does.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    hint: str = ""  # what the value means, for the message ("0: off")

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "a finite number"

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, (tuple, list)):
            return all(self.accepts(v) for v in value)
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True  # a type error is the coercion's to report
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


SEED_RANGE = Range(0, 2**32 - 1, hint="NumPy's seeds are 32-bit")

# RunConfig's keys (one source of truth; a test checks every key names a RunConfig field).
# Floats not listed here still have to be finite (see check_ranges).
RUN_RANGES: dict[str, Range] = {
    "initial_classes": Range(1),
    "total_tasks": Range(1),
    "seed": SEED_RANGE,
    "order_seed": SEED_RANGE,
    "lt_seed": SEED_RANGE,
    "rho": Range(1, hint="the imbalance ratio n_max / n_min; 1: balanced"),
    "epochs": Range(1),
    "lr": Range(0, low_open=True),
    "lr_gamma": Range(0, low_open=True),
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "batch_size": Range(1),
    "clip_grad": Range(0, hint="0: no clipping"),
    "memory_per_class": Range(0),
    "val_fraction": Range(0, 1, high_open=True),
    "image_size": Range(1),
    "augment": Range(choices=("reference", "crop_flip", "shift")),
    "pipeline": Range(choices=("auto", "tensor", "loader")),
    "num_workers": Range(0, hint="0: load in the main process"),
    "eval_batch_size": Range(1),
    "lr_milestones": Range(1),
}


def ranged(default: Any, **kwargs: Any) -> Any:
    """A dataclass field with ``default`` and a :class:`Range` (``Range``'s keyword arguments)."""
    return dataclasses.field(default=default, metadata={RANGE_KEY: Range(**kwargs)})


def positive(default: Any, **kwargs: Any) -> Any:
    """A field that must be > 0 (a temperature, a learning rate)."""
    return ranged(default, low=0, low_open=True, **kwargs)


def at_least(low: float, default: Any, **kwargs: Any) -> Any:
    """A field that must be >= ``low`` (a weight >= 0, a count >= 1)."""
    return ranged(default, low=low, **kwargs)


def one_of(*choices: Any) -> Any:
    """A field whose value must be one of ``choices``; the first is the default."""
    return ranged(choices[0], choices=tuple(choices))


def option_ranges(options_cls: type) -> dict[str, Range]:
    """The ranges an approach's ``Options`` dataclass declares (inherited fields included)."""
    return {
        f.name: f.metadata[RANGE_KEY] for f in dataclasses.fields(options_cls) if RANGE_KEY in f.metadata
    }


def _refuse(key: str, value: Any, spec: Range | None) -> ConfigError:
    shown = list(value) if isinstance(value, tuple) else value
    items = list(value) if isinstance(value, (tuple, list)) else [value]
    finite = all(not isinstance(v, float) or math.isfinite(v) for v in items)
    desc = spec.describe() if spec is not None else "a finite number"
    if spec is not None and spec.choices is None and not finite:
        desc = f"a finite number {desc}"
    hint = f" ({spec.hint})" if spec is not None and spec.hint else ""
    subject = f"every item of {key}" if isinstance(value, (tuple, list)) else key
    if spec is not None and spec.choices is not None:
        fix = f"use {desc}"
    else:
        fix = ("use a value" if finite else "use a finite value") + (f" {spec.describe()}" if spec is not None else "")
    return ConfigError(f"{subject} must be {desc}{hint}, got {shown!r}; {fix}")


def check_value(key: str, value: Any, spec: Range | None) -> None:
    """Raise :class:`ConfigError` naming ``key``, the value and the valid range if ``value`` is out of it."""
    if spec is not None:
        if not spec.accepts(value):
            raise _refuse(key, value, spec)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _refuse(key, value, None)


def check_ranges(values: Mapping[str, Any], options: Mapping[str, Mapping[str, Any]], option_classes: Mapping[str, type]) -> None:
    """Check the run's keys against :data:`RUN_RANGES` and each approach's options against its
    ``Options`` fields' ranges. ``option_classes``: approach name -> its ``Options`` class."""
    for key, value in values.items():
        check_value(key, value, RUN_RANGES.get(key))
    for approach, opts in options.items():
        ranges = option_ranges(option_classes[approach])
        for key, value in opts.items():
            check_value(f"{approach}.{key}", value, ranges.get(key))


def check_milestones(milestones: tuple[int, ...], epochs: int) -> None:
    """User-given lr milestones: strictly increasing epochs in ``1..epochs-1`` (a milestone at or
    past the last epoch never lowers the lr, so it is a mistake, not a schedule)."""
    ms = list(milestones)
    if ms and epochs < 2:
        raise ConfigError(
            f"lr_milestones {ms}: a {epochs}-epoch run has no later epoch to lower the lr at; leave lr_milestones out"
        )
    if any(b <= a for a, b in zip(ms, ms[1:])) or any(not 1 <= m < epochs for m in ms):
        raise ConfigError(
            f"lr_milestones must increase and lie in 1..{epochs - 1} (the epochs after which the lr drops, "
            f"for {epochs} epochs), got {ms}; e.g. --set lr_milestones={','.join(str(m) for m in _fraction_example(epochs))}"
        )


def _fraction_example(epochs: int) -> list[int]:
    ms = sorted({m for m in (round(epochs / 2), round(3 * epochs / 4)) if 1 <= m < epochs})
    return ms or [1]
