"""The sweep file's schema (pydantic, every model ``extra="forbid"``).

The structure is checked here; the training options themselves (``defaults``, every
``set:`` block, ``--set``, the search space's keys) are checked against ``cil_core``'s own
``RunConfig`` by :mod:`orchestrator.trials`, so the two never disagree. The full
reference, with an example of every block, is ``sweeps/README.md``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Keys the orchestrator sets itself: a sweep may not (they would break resumption).
RESERVED_KEYS = ("out",)
# The grid's own axes: set them in ``grid``, not as training options.
AXIS_KEYS = ("dataset", "approach", "scenario", "initial_classes", "total_tasks", "seed")
TABLE_METRICS = ("avg_incremental_accuracy", "last_accuracy", "avg_incremental_accuracy_seen", "forgetting")
# A search selects on the validation hold-out; the test twins (no ``val_``) need ``allow_test_selection``.
SEARCH_METRICS = ("val_avg_incremental_accuracy", "val_acc_seen", "val_task_avg_acc")
TEST_SEARCH_METRICS = tuple(m.removeprefix("val_") for m in SEARCH_METRICS)

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)$")


def normalise_scalar(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; make it the number it was meant to be."""
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [normalise_scalar(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise_scalar(v) for k, v in value.items()}
    return value


Seed = Annotated[int, Field(ge=0, description="seeds are >= 0 (numpy's rule)")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_options(values: dict[str, Any]) -> dict[str, Any]:
    """The sweep's own rules on option keys (reserved, axes); the values are cil_core's to check."""
    values = normalise_scalar(dict(values or {}))
    for key in values:
        if not isinstance(key, str) or not key:
            raise ValueError(f"option names must be strings, got {key!r}")
        if key in RESERVED_KEYS:
            raise ValueError(f"{key!r} is set by the orchestrator (each trial writes to results/trials/<id>/)")
        if key in AXIS_KEYS:
            raise ValueError(f"{key!r} is a grid axis: set it under 'grid', not as a training option")
    return values


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r}: use letters, digits, '_', '.', '-' (it names a table row or the results folder)")
    return value


def _split_list(value: Any) -> Any:
    """A single pair ``[50, 6]`` or ``"50 6"`` is one split; a list of pairs is several."""
    if isinstance(value, str) or (isinstance(value, (list, tuple)) and len(value) == 2
                                  and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return [value]
    return value


def _as_list(value: Any) -> Any:
    return value if isinstance(value, (list, tuple)) or value is None else [value]


# ``defaults:`` with nothing after it is YAML's null: an empty block, not an error.
Options = Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v), AfterValidator(check_options),
                    Field(default_factory=dict)]
Name = Annotated[str, AfterValidator(_name)]
Listed = BeforeValidator(_as_list)  # a single value is a list of one
Splits = BeforeValidator(_split_list)


class Split(Model):
    """``[initial_classes, total_tasks]``; also accepted as ``"5 20"``."""

    initial_classes: int = Field(ge=1)
    total_tasks: int = Field(ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(",", " ").replace("/", " ").split()
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a split is [initial_classes, total_tasks], got {list(value)!r}")
            try:
                return {"initial_classes": int(value[0]), "total_tasks": int(value[1])}
            except (TypeError, ValueError):
                raise ValueError(f"a split is two integers, got {list(value)!r}") from None
        return value

    @property
    def pair(self) -> tuple[int, int]:
        return (self.initial_classes, self.total_tasks)


class ApproachVariant(Model):
    """A grid entry that runs ``approach`` with extra options under its own row ``name``."""

    name: Name
    approach: str
    set: Options


class Grid(Model):
    """The axes whose cartesian product is the sweep (before ``exclude`` / ``include``)."""

    dataset: Annotated[list[str], Listed] = Field(min_length=1)
    scenario: Annotated[list[str], Listed] = Field(min_length=1)
    split: Annotated[list[Split], Splits] = Field(min_length=1)
    approach: list[ApproachVariant] = Field(min_length=1)
    seed: Annotated[list[Seed], Listed] = Field(min_length=1)

    @field_validator("approach", mode="before")
    @classmethod
    def _variants(cls, value: Any) -> Any:
        """A plain name ``dgr`` is the variant ``{name: dgr, approach: dgr}``."""
        return [{"name": v, "approach": v} if isinstance(v, str) else v for v in _as_list(value)]

    @model_validator(mode="after")
    def _unique(self) -> "Grid":
        names = [a.name for a in self.approach]
        for axis, values in {"dataset": self.dataset, "scenario": self.scenario, "seed": self.seed,
                             "approach": names}.items():
            if len(set(values)) != len(values):
                raise ValueError(f"{axis}: a {'name' if axis == 'approach' else 'value'} is listed twice")
        return self


class Match(Model):
    """A pattern over the axes; an axis left out matches everything."""

    dataset: Annotated[list[str] | None, Listed] = None
    scenario: Annotated[list[str] | None, Listed] = None
    split: Annotated[list[Split] | None, Splits] = None
    approach: Annotated[list[str] | None, Listed] = None
    seed: Annotated[list[Seed] | None, Listed] = None

    @model_validator(mode="after")
    def _not_empty(self) -> "Match":
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one of dataset, scenario, split, approach, seed")
        return self

    def matches(self, axes: dict[str, Any], approach_names: tuple[str, ...]) -> bool:
        """``approach_names``: the trial's row name and its approach (either may match)."""
        pair = (axes["initial_classes"], axes["total_tasks"])
        return ((self.dataset is None or axes["dataset"] in self.dataset)
                and (self.scenario is None or axes["scenario"] in self.scenario)
                and (self.split is None or pair in [s.pair for s in self.split])
                and (self.approach is None or bool(set(approach_names) & set(self.approach)))
                and (self.seed is None or axes["seed"] in self.seed))


class Resources(Model):
    """What one trial asks Ray for. ``gpu`` below 1 packs several trials on one GPU."""

    gpu: float | None = Field(default=None, ge=0)
    cpu: float | None = Field(default=None, gt=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and value != int(value):
            raise ValueError("a request above 1 GPU must be a whole number (Ray's rule)")
        return value


class Layer(Model):
    """A block of options and resources for some trials (``datasets.<d>``, ``approaches.<a>``, ``overrides``)."""

    set: Options
    resources: Resources | None = None


class DatasetOverride(Layer):
    hours: float | None = Field(default=None, ge=0, description="wall-clock hours of one trial with its resources")


class ApproachOverride(Layer):
    hours_factor: float = Field(default=1.0, gt=0, description="multiplies the data set's hours")


class Rule(Layer):
    """``overrides:`` entries: options for trials that match, applied last, in order."""

    match: Match
    hours: float | None = Field(default=None, ge=0)


class Distribution(Model):
    """Exactly one of ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``quniform: [lo, hi, q]``,
    ``qloguniform: [lo, hi, q]``, ``randint: [lo, hi]`` (hi excluded) or ``choice: [a, b, ...]``."""

    uniform: list[float] | None = None
    loguniform: list[float] | None = None
    quniform: list[float] | None = None
    qloguniform: list[float] | None = None
    randint: list[int] | None = None
    choice: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return normalise_scalar(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        if sum(value is not None for _, value in self) != 1:
            raise ValueError(f"give exactly one of {', '.join(type(self).model_fields)}")
        kind, args, expected = self.kind, self.args, 3 if self.kind.startswith("q") else 2
        problem = ("list at least one value" if not args else None) if kind == "choice" else (
            f"expected {expected} numbers, got {args!r}" if len(args) != expected
            else f"the lower bound must be below the upper bound, got {args!r}" if args[0] >= args[1]
            else f"bounds must be positive, got {args!r}" if "log" in kind and args[0] <= 0 else None)
        if problem:
            raise ValueError(f"{kind}: {problem}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name, value in self if value is not None)

    @property
    def args(self) -> list[Any]:
        return list(getattr(self, self.kind))


class EarlyStopping(Model):
    """ASHA on the per-task metric; one "time step" is one finished task."""

    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)
    max_t: int | None = Field(default=None, ge=1, description="default: the run's number of tasks")


class Search(Model):
    metric: str = "val_avg_incremental_accuracy"
    allow_test_selection: bool = False  # select on a test metric knowingly (the report warns)
    eval_seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1, description="evaluate-best's seeds")
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(ge=1)
    searcher: Literal["random", "optuna"] = "random"
    seed: int | None = 0
    space: dict[str, Distribution] = Field(min_length=1)
    early_stopping: EarlyStopping | None = None
    max_concurrent: int | None = Field(default=None, ge=1)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in SEARCH_METRICS + TEST_SEARCH_METRICS:
            raise ValueError(f"{value!r}: choose one of {', '.join(SEARCH_METRICS)} (reported after every task)")
        return value

    @model_validator(mode="after")
    def _not_on_test(self) -> "Search":
        if self.metric in TEST_SEARCH_METRICS and not self.allow_test_selection:
            raise ValueError(
                f"metric {self.metric!r} is measured on the test set: select on 'val_{self.metric}' "
                "(the validation hold-out), or add 'allow_test_selection: true' to select on test data knowingly"
            )
        return self

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Distribution]) -> dict[str, Distribution]:
        check_options({k: None for k in value})
        return value


class Report(Model):
    tables: list[Literal[TABLE_METRICS]] = Field(default_factory=lambda: list(TABLE_METRICS[:2]), min_length=1)
    plots: bool = True
    paper: bool = True
    top_k: int = Field(default=5, ge=1, description="search: how many best configs to list")


class TuneSettings(Model):
    reuse_actors: bool = True
    max_concurrent_trials: int | None = Field(default=None, ge=1)


class Sweep(Model):
    name: Name
    description: str = ""
    defaults: Options
    grid: Grid
    datasets: dict[str, DatasetOverride] = Field(default_factory=dict)
    approaches: dict[str, ApproachOverride] = Field(default_factory=dict)
    overrides: list[Rule] = Field(default_factory=list)
    exclude: list[Match] = Field(default_factory=list)
    include: list[Match] = Field(default_factory=list)
    resources: Resources = Field(default_factory=lambda: Resources(gpu=1, cpu=1))
    skip_missing_approaches: bool = False
    requires: list[str] = Field(default_factory=list, description="options that must come from --set (say data_root)")
    search: Search | None = None
    report: Report = Field(default_factory=Report)
    tune: TuneSettings = Field(default_factory=TuneSettings)

    @field_validator("grid", mode="before")
    @classmethod
    def _grid_given(cls, value: Any) -> Any:
        if value is None or value == {}:
            raise ValueError("is empty: give dataset, scenario, split, approach and seed")
        return value

    @model_validator(mode="after")
    def _keys_name_grid_values(self) -> "Sweep":
        datasets = set(self.grid.dataset) | {d for m in self.include for d in (m.dataset or [])}
        approaches = {n for v in self.grid.approach for n in (v.name, v.approach)}
        approaches |= {a for m in self.include for a in (m.approach or [])}
        for block, names, kind in (("datasets", datasets, "a data set"), ("approaches", approaches, "an approach")):
            if unknown := [name for name in getattr(self, block) if name not in names]:
                raise ValueError(f"{block}.{unknown[0]}: not {kind} of the grid ({', '.join(sorted(names))})")
        return self
