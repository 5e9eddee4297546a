"""The run configuration: one frozen dataclass, resolved once, written to ``config.json``.

Precedence: the data set's protocol defaults < the approach's option defaults < what the
user gave (CLI flags, ``--set KEY=VALUE``, sweep entries). Nothing changes the config after
:func:`resolve_config`; methods read their options from ``config.options[approach]``.

No torch here (nor in the data set specs and approach options it reads): the orchestrator's
driver resolves every trial with :func:`build_config` + :func:`resolve_config` and names it
by :func:`fingerprint`, the same hash ``run_experiment`` records, so a trial id and a run's
fingerprint are one thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .approach_options import canonical_approach, options_class
from .errors import ConfigError
from .ranges import check_milestones, check_ranges

SCENARIOS = ("conv", "lt", "ltio")
REQUIRED_KEYS = ("dataset", "approach", "scenario", "initial_classes", "total_tasks")
# Keys that do not change what a run computes (paths, placement): left out of the fingerprint,
# so a run moved to another machine or folder still resumes and is still recognised.
NON_SEMANTIC_KEYS = ("out", "data_root", "device", "num_workers", "eval_batch_size", "checkpoint")


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
    # None: the data set's protocol ("reference": pad 4 + random-resized crop + flip, the paper's
    # CIFAR recipe; "crop_flip": pad 4 + random crop + flip; "shift": pad 1 + random crop).
    augment: str | None = None
    # Where things are.
    data_root: str | None = None
    out: str | None = None
    # Execution.
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    pipeline: str = "auto"  # "auto", "tensor" (images resident, augmented on device), "loader"
    num_workers: int | None = None
    # None: the data set's protocol decides (README "Execution": fp32 for the paper's
    # protocols, as the reference code; the measured faster one for the CPU stand-ins).
    # Honoured on the CPU as on CUDA; bf16 where the device has none runs fp32 (said once).
    # result.json["execution"] records what ran.
    amp: bool | None = None  # bf16 autocast
    channels_last: bool | None = None  # channels-last weights and activations
    compile: bool = False  # torch.compile of the training forward (needs a C compiler on the CPU)
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
        return options_class(self.approach)(**dict(self.options.get(self.approach, {})))


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
        if not math.isfinite(as_float) or as_float != int(as_float):
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
    """``["dgr.dakd=false", "lr=0.05"]`` -> ``{"dgr.dakd": "false", "lr": "0.05"}`` (typed by build_config)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set dgr.dakd=false")
        out[key.strip()] = value.strip()
    return out


def split_keys(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flat keys (``lr``) apart from approach options (``dgr.dakd`` or ``options: {dgr: {dakd: ..}}``)."""
    flat: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key == "options":
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) or v is None for v in value.values()):
                raise ConfigError(
                    f"options: expected a mapping like {{'dgr': {{'dakd': False}}}}, got {value!r}; "
                    "on the command line use --set APPROACH.KEY=VALUE (e.g. --set dgr.dakd=false)"
                )
            for approach, opts in value.items():
                options.setdefault(str(approach), {}).update(opts or {})
        elif "." in key:
            approach, okey = key.split(".", 1)
            options.setdefault(approach, {})[okey] = value
        else:
            flat[key] = value
    return flat, options


def build_config(values: Mapping[str, Any]) -> RunConfig:
    """Build a RunConfig from flat keys (``lr``, ``dgr.dakd``) or a nested ``options`` dict.

    Unknown keys, values of the wrong type and values out of their declared range raise
    :class:`ConfigError` naming the key.
    """
    from .registry import get_dataset

    flat, options = split_keys(values)
    unknown = sorted(set(flat) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; valid keys are: {', '.join(sorted(_FIELD_TYPES))} "
            "or APPROACH.OPTION (e.g. dgr.dakd)"
        )
    for required in REQUIRED_KEYS:
        if required not in flat:
            raise ConfigError(f"missing required option {required!r}")
    typed = {k: _coerce(v, _FIELD_TYPES[k], k) for k, v in flat.items()}
    typed["approach"] = canonical_approach(typed["approach"])
    typed["dataset"] = get_dataset(typed["dataset"]).name
    if typed["scenario"] not in SCENARIOS:
        raise ConfigError(f"unknown scenario {typed['scenario']!r}; choose one of: {', '.join(SCENARIOS)}")
    resolved_options: dict[str, dict[str, Any]] = {}
    for approach, opts in options.items():
        name = canonical_approach(approach)
        resolved_options[name] = {k: coerce_option(options_class(name), k, v, name) for k, v in opts.items()}
    config = RunConfig(**typed, options=resolved_options)
    check_config_ranges(config)  # here too, so a torch-free pre-check (the orchestrator's) sees them
    return config


def dataset_facts(config: RunConfig) -> Any:
    """The data set's spec (classes, protocol, family), reading its folder only when the
    class count is not fixed (a plain ``imagelist``); no torch, no images decoded."""
    from .registry import get_dataset

    spec = get_dataset(config.dataset)
    return spec if spec.num_classes else spec.bind(config)


def resolve_config(config: RunConfig) -> RunConfig:
    """Fill every ``None`` from the data set's protocol and the approach's defaults; check.

    The result is what ``config.json`` and ``result.json`` record: a run is fully described
    by it, so two runs with equal resolved configs compute the same thing. Resolving a
    resolved config changes nothing. Options of other approaches are dropped (they do nothing).
    """
    from .registry import get_dataset

    check_config_ranges(config)
    dataset = get_dataset(config.dataset)
    if config.data_root is not None and not dataset.reads_data_root:
        raise ConfigError(
            f"{dataset.name} is built in and reads no data folder, so --data-root {config.data_root} "
            "would be ignored; drop --data-root (or pick the data set that lives there)"
        )
    spec = dataset_facts(config)
    protocol = spec.protocol
    epochs = config.epochs if config.epochs is not None else protocol.epochs
    if config.lr_milestones is not None:
        milestones = tuple(config.lr_milestones)
        check_milestones(milestones, epochs)
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
        amp=config.amp if config.amp is not None else protocol.amp,
        channels_last=config.channels_last if config.channels_last is not None else protocol.channels_last,
        # Absolute paths: a Ray trial's working directory is not the user's.
        out=str(Path(config.out).expanduser().resolve()) if config.out else None,
        data_root=str(Path(config.data_root).expanduser().resolve()) if config.data_root else None,
    )
    # The approach's options with every default written out, data-set-dependent ones too
    # (an Options class's ``resolve_defaults``), so config.json says what ran.
    opts = options_class(config.approach)(**dict(config.options.get(config.approach, {})))
    hook = getattr(opts, "resolve_defaults", None)
    if hook is not None:
        opts = hook(spec, config.approach)
    resolved = dataclasses.replace(config, options={config.approach: dataclasses.asdict(opts)}, **defaults)
    check_config_ranges(resolved)  # the protocol's values too (an image list's own defaults)
    check_combinations(resolved, spec)
    return resolved


def fingerprint(config: RunConfig) -> str:
    """A content hash of the resolved config's semantic keys (stable across machines): what
    ``result.json`` and the checkpoints carry, and the orchestrator's trial id ends with."""
    data = {k: v for k, v in config.to_dict().items() if k not in NON_SEMANTIC_KEYS}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints_by_seed(config: RunConfig) -> Callable[[int], str]:
    """``seed -> fingerprint(replace(config, seed=seed))``, hashing one text per seed: how a
    million-trial grid gets its ids without a million config copies."""
    data = {k: v for k, v in config.to_dict().items() if k not in NON_SEMANTIC_KEYS}
    data["seed"] = _SEED_MARK
    before, after = json.dumps(data, sort_keys=True, default=str).split(f'"seed": {_SEED_MARK}')

    def of(seed: int) -> str:
        return hashlib.sha256(f'{before}"seed": {int(seed)}{after}'.encode()).hexdigest()[:16]

    return of


_SEED_MARK = -918273645


def check_config_ranges(config: RunConfig) -> None:
    """Every number of ``config`` and of each approach's options within its declared range
    (:mod:`cil_core.ranges`); raises :class:`ConfigError` naming the key, the value and the range."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "options"}
    classes = {name: options_class(name) for name in config.options}
    check_ranges(values, config.options, classes)


def check_combinations(config: RunConfig, spec: Any) -> None:
    """A resolved config against the data set's facts (its classes, whether it is long-tailed on disk)."""
    num_classes = spec.num_classes
    if config.initial_classes >= num_classes and config.total_tasks > 1:
        raise ConfigError(
            f"initial_classes={config.initial_classes} leaves no classes for later tasks: "
            f"{config.dataset} has {num_classes} classes; use fewer initial classes"
        )
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
    if config.scenario == "conv" and getattr(spec, "already_long_tailed", False):
        raise ConfigError(
            f"{config.dataset} is long-tailed on disk, so scenario 'conv' (balanced) is impossible; use lt or ltio"
        )


def config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """The inverse of :meth:`RunConfig.to_dict` (a resolved config read back from JSON)."""
    data = dict(data)
    data["lr_milestones"] = tuple(data["lr_milestones"]) if data.get("lr_milestones") is not None else None
    return RunConfig(**data)


def config_from_json(text: str) -> RunConfig:
    return config_from_dict(json.loads(text))
