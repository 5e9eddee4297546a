"""The approach surface: approaches use only what ``Method`` documents, and an extra stage's
optimiser settings come from the run's config unless the stage sets them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np

import cil_core.methods
from cil_core.approach_options import NoOptions
from cil_core.methods.base import Method

METHODS_DIR = Path(cil_core.methods.__file__).parent
SURFACE = ("model", "teacher", "device", "config", "scenario", "dataset", "memory", "train_labels", "generator")


def _reaches_into_learner(tree: ast.AST) -> list[int]:
    """Lines that read the Learner: ``x.learner``/``x._learner``, or the name ``learner`` used
    anywhere but as the pass-through ``super().__init__(learner=learner, ...)``."""
    passed_on = {
        id(kw.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
        for kw in node.keywords if kw.arg == "learner" and isinstance(kw.value, ast.Name)
    }
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("learner", "_learner"):
            lines.append(node.lineno)
        elif isinstance(node, ast.Name) and node.id == "learner" and id(node) not in passed_on:
            lines.append(node.lineno)
    return lines


def _builds_phase(tree: ast.AST) -> list[int]:
    """Lines that build a ``Phase`` directly instead of calling ``run_stage``."""
    return [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Phase"
    ]


def test_approaches_use_only_the_documented_surface() -> None:
    offenders = {}
    for path in sorted(METHODS_DIR.glob("*.py")):
        if path.name == "base.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        lines = _reaches_into_learner(tree) + _builds_phase(tree)
        if lines:
            offenders[path.name] = sorted(lines)
    assert offenders == {}, f"approaches reaching past Method's surface (file: lines): {offenders}"


def test_the_check_catches_a_reach_into_the_learner() -> None:
    tree = ast.parse(
        "class A:\n"
        "    def __init__(self, *, learner, options):\n"
        "        super().__init__(learner=learner, options=options)\n"
        "    def f(self):\n"
        "        learner = self.learner\n"
        "        return Phase(lr=learner.config.lr)\n"
    )
    assert sorted(_reaches_into_learner(tree)) == [5, 5, 6]
    assert _builds_phase(tree) == [6]


def test_every_surface_member_says_why_an_approach_needs_it() -> None:
    for name in (*SURFACE, "features", "run_stage"):
        member = inspect.getattr_static(Method, name)
        doc = (member.fget if isinstance(member, property) else member).__doc__
        assert doc and len(doc.split()) >= 8, f"Method.{name} lacks its one-line reason"


def test_surface_reads_the_running_learner(make_learner) -> None:
    learner = make_learner(train_labels=[3, 1])
    learner.generator = object()
    method = Method(learner=learner, options=NoOptions())
    for name in SURFACE:
        assert getattr(method, name) is getattr(learner, name, None)


def test_run_stage_fills_unset_optimiser_settings_from_the_config(make_learner) -> None:
    learner = make_learner()
    cfg = learner.config
    cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.lr_gamma = 0.3, 0.7, 2e-4, 16, 0.2
    method = Method(learner=learner, options=NoOptions())
    indices = np.arange(5)

    def terms(step):
        return {}

    method.run_stage("a", indices=indices, epochs=3, param_groups=[], loss_terms=terms)
    method.run_stage("b", indices=indices, epochs=4, param_groups=[], loss_terms=terms,
                     lr=None, momentum=0.0, batch_size=2, milestones=(2,), train_mode=False)
    a, b = learner.phases
    assert (a.name, a.epochs, a.indices is indices, a.loss_terms is terms) == ("a", 3, True, True)
    assert (a.lr, a.momentum, a.weight_decay, a.batch_size, a.lr_gamma, a.milestones) == (0.3, 0.7, 2e-4, 16, 0.2, ())
    assert a.train_mode and a.forward is None
    # Set settings win; None is the run's.
    assert (b.lr, b.momentum, b.weight_decay, b.batch_size, b.milestones, b.train_mode) == (0.3, 0.0, 2e-4, 2, (2,), False)
