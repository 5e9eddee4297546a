"""The run configuration: one frozen dataclass, resolved once, written to ``config.json``.

Precedence: the data set's protocol defaults < the approach's option defaults < what the
user gave (CLI flags, ``--set KEY=VALUE``, sweep entries). Nothing changes the config after
:func:`resolve_config`; methods read their options from ``config.options[approach]``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

SCENARIOS = ("conv", "lt", "ltio")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one run computes. ``None`` means "the protocol default"."""

    dataset: str
    approach: str
    scenario: str
    initial_classes: int
    total_tasks: int
    # Seeds (three, all recorded): training (init, batches, augmentation), the class order
    # (None: the paper's fixed order), and the long-tailed subsample (0 as in the reference).
    seed: int = 0
    order_seed: int | None = None
    lt_seed: int = 0
    rho: float = 100.0
    # Optimisation (None: from the data set's protocol, METHOD.md section 1).
    epochs: int | None = None
    lr: float | None = None
    lr_milestones: tuple[int, ...] | None = None
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float | None = None
    batch_size: int | None = None
    clip_grad: float = 10000.0
    # Memory and protocol.
    memory_per_class: int = 20
    val_fraction: float = 0.1
    backbone: str | None = None
    image_size: int | None = None
    # None: the data set's protocol ("reference": pad + random-resized crop + flip, the paper's
    # CIFAR recipe; "crop_flip": pad 4 + random crop + flip; "shift": pad 1 + random crop).
    augment: str | None = None
    # Where things are.
    data_root: str | None = None
    out: str | None = None
    # Execution.
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    pipeline: str = "auto"  # "auto", "tensor" (images resident, augmented on device), "loader"
    num_workers: int | None = None
    amp: bool = True  # bf16 autocast where the CUDA device supports it; ignored on CPU
    channels_last: bool = True  # CUDA only
    compile: bool = False
    eval_batch_size: int = 512
    checkpoint: bool = True
    # Per-approach options: {"dgr": {"dakd": False}}; validated against the approach's
    # Options dataclass by resolve_config.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lr_milestones"] = list(self.lr_milestones) if self.lr_milestones is not None else None
        out["options"] = {k: dict(v) for k, v in self.options.items()}
        return out

    def method_options(self) -> Any:
        """The approach's typed options (its ``Options`` dataclass, defaults filled in)."""
        from .registry import get_method

        method = get_method(self.approach)
        return method.Options(**dict(self.options.get(method.name, {})))


_FIELD_TYPES = typing.get_type_hints(RunConfig)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a string or JSON value into ``annotation``'s type, or say which key is wrong."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like 80,120, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if as_float != int(as_float):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def coerce_option(options_cls: type, key: str, value: Any, approach: str) -> Any:
    """Check one approach option (``dgr.dakd``) against the approach's Options dataclass."""
    hints = typing.get_type_hints(options_cls)
    if key not in hints:
        known = ", ".join(f"{approach}.{k}" for k in sorted(hints)) or "(none)"
        raise ConfigError(f"unknown option {approach}.{key}; {approach} has: {known}")
    return _coerce(value, hints[key], f"{approach}.{key}")


def parse_set_items(items: list[str]) -> dict[str, Any]:
    """``["dgr.dakd=false", "lr=0.05"]`` -> ``{"dgr.dakd": "false", "lr": "0.05"}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set dgr.dakd=false")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_config(values: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from flat keys (``lr``, ``dgr.dakd``) or a nested ``options`` dict.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key.
    """
    from .registry import get_method

    flat: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key == "options":
            for approach, opts in (value or {}).items():
                for okey, ovalue in (opts or {}).items():
                    options.setdefault(approach, {})[okey] = ovalue
        elif "." in key:
            approach, okey = key.split(".", 1)
            options.setdefault(approach, {})[okey] = value
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; valid keys are: {', '.join(sorted(_FIELD_TYPES))} "
            "or APPROACH.OPTION (e.g. dgr.dakd)"
        )
    for required in ("dataset", "approach", "scenario", "initial_classes", "total_tasks"):
        if required not in flat:
            raise ConfigError(f"missing required option {required!r}")
    typed = {k: _coerce(v, _FIELD_TYPES[k], k) for k, v in flat.items() if k != "options"}
    typed["approach"] = get_method(typed["approach"]).name
    from .registry import get_dataset

    typed["dataset"] = get_dataset(typed["dataset"]).name
    if typed["scenario"] not in SCENARIOS:
        raise ConfigError(f"unknown scenario {typed['scenario']!r}; choose one of: {', '.join(SCENARIOS)}")
    resolved_options: dict[str, dict[str, Any]] = {}
    for approach, opts in options.items():
        method = get_method(approach)
        resolved_options[method.name] = {
            k: coerce_option(method.Options, k, v, method.name) for k, v in opts.items()
        }
    return RunConfig(**typed, options=resolved_options)


def resolve_config(config: RunConfig) -> RunConfig:
    """Fill every ``None`` from the data set's protocol and check combinations.

    The result is what ``config.json`` and ``result.json`` record: a run is fully described
    by it, so two runs with equal resolved configs compute the same thing.
    """
    from .registry import get_dataset, get_method

    spec = get_dataset(config.dataset).bind(config)
    protocol = spec.protocol
    method = get_method(config.approach)
    epochs = config.epochs if config.epochs is not None else protocol.epochs
    if config.lr_milestones is not None:
        milestones = tuple(config.lr_milestones)
    elif config.epochs is not None and config.epochs != protocol.epochs:
        # Keep the schedule's shape when only the length changes (80,120 of 160 -> 1/2, 3/4).
        milestones = tuple(max(1, round(m * epochs / protocol.epochs)) for m in protocol.lr_milestones)
        milestones = tuple(m for m in milestones if m < epochs)
    else:
        milestones = protocol.lr_milestones
    defaults = dict(
        epochs=epochs,
        lr=config.lr if config.lr is not None else protocol.lr,
        lr_milestones=milestones,
        weight_decay=config.weight_decay if config.weight_decay is not None else protocol.weight_decay,
        batch_size=config.batch_size if config.batch_size is not None else protocol.batch_size,
        backbone=config.backbone or protocol.backbone,
        image_size=config.image_size or protocol.image_size,
        augment=config.augment or protocol.augment,
        # Absolute paths: a Ray trial's working directory is not the user's.
        out=str(Path(config.out).expanduser().resolve()) if config.out else None,
        data_root=str(Path(config.data_root).expanduser().resolve()) if config.data_root else None,
    )
    # The approach's options, with every default written out so config.json is complete.
    opts = dataclasses.asdict(method.Options(**dict(config.options.get(method.name, {}))))
    options = {k: dict(v) for k, v in config.options.items()}
    options[method.name] = opts
    resolved = dataclasses.replace(config, options=options, **defaults)
    _check_combinations(resolved, spec)
    return resolved


def _check_combinations(config: RunConfig, spec: Any) -> None:
    num_classes = spec.num_classes
    if config.initial_classes < 1:
        raise ConfigError(f"initial_classes must be at least 1, got {config.initial_classes}")
    if config.initial_classes >= num_classes and config.total_tasks > 1:
        raise ConfigError(
            f"initial_classes={config.initial_classes} leaves no classes for later tasks: "
            f"{config.dataset} has {num_classes} classes; use fewer initial classes"
        )
    if config.total_tasks < 1:
        raise ConfigError(f"total_tasks must be at least 1, got {config.total_tasks}")
    remaining = num_classes - config.initial_classes
    if config.total_tasks > 1 and config.total_tasks - 1 > remaining:
        raise ConfigError(
            f"{config.total_tasks} tasks need at least {config.total_tasks - 1} classes after the "
            f"first task, but {config.dataset} has only {remaining} left; use fewer tasks"
        )
    if config.total_tasks == 1 and config.initial_classes != num_classes:
        raise ConfigError(
            f"one task must hold all {num_classes} classes of {config.dataset}; "
            f"got initial_classes={config.initial_classes}"
        )
    if not 0.0 <= config.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.augment not in ("reference", "crop_flip", "shift"):
        raise ConfigError(f"augment must be 'reference', 'crop_flip' or 'shift', got {config.augment!r}")
    if config.pipeline not in ("auto", "tensor", "loader"):
        raise ConfigError(f"pipeline must be auto, tensor or loader, got {config.pipeline!r}")
    if config.epochs is not None and config.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {config.epochs}")
    if config.memory_per_class < 0:
        raise ConfigError(f"memory_per_class must be >= 0, got {config.memory_per_class}")
    if config.scenario == "conv" and getattr(spec, "already_long_tailed", False):
        raise ConfigError(
            f"{config.dataset} is long-tailed on disk, so scenario 'conv' (balanced) is impossible; use lt or ltio"
        )


def config_from_json(text: str) -> RunConfig:
    data = json.loads(text)
    data["lr_milestones"] = tuple(data["lr_milestones"]) if data.get("lr_milestones") is not None else None
    return RunConfig(**data)
