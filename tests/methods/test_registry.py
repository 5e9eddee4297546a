"""The method registry against the files in cil_core/methods/."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from pathlib import Path

import cil_core.methods as methods_pkg
from cil_core.methods.base import Method
from cil_core.registry import METHODS, method_names

# Every approach of the table, plus DGR itself.
EXPECTED = {
    "finetune", "joint", "lwf", "icarl", "eeil", "bic", "lucir", "podnet",
    "eeil_2stage", "lucir_2stage", "podnet_2stage", "dgr",
    "lucir_gvalign", "podnet_gvalign",  # a later method (GVAlign, WACV 2024) the reference table quotes
}
# Wrappers that add a recipe to several base methods live in one module each.
WRAPPER_MODULES = {"_2stage": "two_stage", "_gvalign": "gvalign"}
# Modules that hold shared machinery rather than approaches.
NOT_APPROACHES = {"base"}


def _module_names() -> set[str]:
    return {info.name for info in pkgutil.iter_modules(methods_pkg.__path__)}


def test_registry_matches_the_method_files():
    names = set(method_names())
    assert EXPECTED <= names
    files = {p.stem for p in Path(methods_pkg.__file__).parent.glob("*.py")} - {"__init__"}
    assert files == _module_names()
    registered_in = {name: METHODS[name].__module__.rsplit(".", 1)[-1] for name in names}
    for name, module in registered_in.items():
        # an approach lives in the file of its name; the 2-stage wrappers all live in two_stage.py,
        # the GVAlign ones in gvalign.py
        expected = next((m for suffix, m in WRAPPER_MODULES.items() if name.endswith(suffix)), name)
        assert module == expected, f"{name} is registered in {module}.py"
    approach_files = {m for m in files if not m.startswith("_")} - NOT_APPROACHES
    assert approach_files == set(registered_in.values())


def test_every_approach_is_a_method_with_typed_cited_options():
    for name in method_names():
        cls = METHODS[name]
        assert issubclass(cls, Method) and cls.name == name and cls.summary
        opts = cls.Options()
        assert dataclasses.is_dataclass(opts) and cls.Options.__dataclass_params__.frozen
        typing.get_type_hints(cls.Options)  # resolvable: --set can coerce every key


def test_no_method_runs_its_own_loop_or_backward():
    root = Path(methods_pkg.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert ".backward(" not in text and "for epoch" not in text, path.name
    importlib.import_module("cil_core.methods.two_stage")


def test_torch_free_option_table_is_the_registrys():
    """``cil_core.approach_options`` (read by the torch-free config resolution) lists exactly
    the registered approaches, each with the very Options class the approach uses."""
    from cil_core.approach_options import APPROACH_OPTIONS

    assert set(APPROACH_OPTIONS) == set(method_names())
    for name in method_names():
        assert METHODS[name].Options is APPROACH_OPTIONS[name], name
