"""Decorator-filled registries: one source of truth for what exists.

The CLI's choices, ``--list``, sweep validation and the README's method table all read
these maps, so adding a method, data set or backbone is one decorated definition.
Registration happens when the defining module is imported; :func:`load_all` imports the
packages that hold them (no work happens at import time beyond filling the maps).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")

METHODS: dict[str, Any] = {}
DATASETS: dict[str, Any] = {}
BACKBONES: dict[str, Callable[..., Any]] = {}


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[T], T]:
    def decorate(obj: T) -> T:
        if name in table and table[name] is not obj:
            raise RuntimeError(f"{kind} {name!r} registered twice")
        table[name] = obj
        return obj

    return decorate


def register_method(name: str) -> Callable[[T], T]:
    return _register(METHODS, "method", name)


def register_dataset(name: str) -> Callable[[T], T]:
    return _register(DATASETS, "dataset", name)


def register_backbone(name: str) -> Callable[[T], T]:
    return _register(BACKBONES, "backbone", name)


_loaded = False


def load_datasets() -> None:
    """Import the data set specs only: no torch (configs resolve in a torch-free driver)."""
    importlib.import_module("cil_core.data.datasets")


def load_all() -> None:
    """Import every module of ``cil_core.methods``, ``cil_core.backbones`` and the data sets."""
    global _loaded
    if _loaded:
        return
    for package in ("cil_core.methods", "cil_core.backbones"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    importlib.import_module("cil_core.data.datasets")
    _loaded = True


def _lookup(table: dict[str, Any], kind: str, name: str, case_insensitive: bool = False) -> Any:
    load_datasets() if table is DATASETS else load_all()
    if name in table:
        return table[name]
    if case_insensitive:
        for key, value in table.items():
            if key.lower() == name.lower():
                return value
    raise ConfigError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(table))}")


def get_method(name: str) -> Any:
    return _lookup(METHODS, "approach", name, case_insensitive=True)


def get_dataset(name: str) -> Any:
    return _lookup(DATASETS, "dataset", name, case_insensitive=True)


def get_backbone(name: str) -> Callable[..., Any]:
    return _lookup(BACKBONES, "backbone", name)


def method_names() -> list[str]:
    load_all()
    return sorted(METHODS)


def dataset_names() -> list[str]:
    load_datasets()
    return sorted(DATASETS)
