"""Check a sweep against ``cil_core`` before anything starts (in a child process: no torch here).

What the sweep schema cannot know, ``cil_core`` can: which approaches and data sets exist,
which options each accepts and of what type. :func:`check_with_cil_core` asks it, in a
subprocess (``python -m orchestrator.cil_check``), and turns the first problem into a
:class:`~orchestrator.errors.SweepError` naming the file and the key.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import schema
from .errors import SweepError
from .sweep import TrialSpec, option_blocks

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 300


@dataclass
class CheckReport:
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    missing_approaches: list[str] = field(default_factory=list)
    missing_datasets: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _run_child(request: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("CUDA_VISIBLE_DEVICES", "")  # checking names needs no GPU
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator.cil_check"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"import_error": f"checking the sweep against cil_core took over {CHECK_TIMEOUT_S} s"}
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"import_error": f"cil_core check failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_with_cil_core(
    sweep: schema.Sweep,
    trials: list[TrialSpec],
    *,
    where: str,
    set_values: Mapping[str, Any] | None = None,
    strict: bool = True,
) -> CheckReport:
    """Raise :class:`SweepError` on the first bad name or option.

    ``strict=False`` (``--dry-run``) turns approaches / data sets that ``cil_core`` does not
    have yet, and a ``cil_core`` that cannot be imported, into warnings: a dry-run lists
    the paper's whole grid even while baselines are still being written.
    """
    blocks = [
        {"where": w, "options": opts, "pattern": pattern} for w, opts, pattern in option_blocks(sweep) if opts
    ]
    if set_values:
        blocks.append({"where": "--set", "options": dict(set_values), "pattern": {}})
    if sweep.search is not None:
        blocks.append(
            {"where": "search.space", "options": {k: d.sample_value() for k, d in sweep.search.space.items()}, "pattern": {}}
        )
    reply = _run_child({"blocks": blocks, "trials": [{"id": t.id, "config": t.config} for t in trials]})
    if "import_error" in reply:
        if strict:
            raise SweepError(where, None, f"cannot check the sweep: {reply['import_error']}")
        return CheckReport(warnings=[f"not checked against cil_core: {reply['import_error']}"])
    report = CheckReport(methods=reply["methods"], datasets=reply["datasets"], warnings=list(reply.get("warnings", [])))
    _check_names(sweep, trials, where, report, strict)
    for error in reply.get("errors", []):
        where_key = error["where"]
        if where_key.startswith("--set"):
            raise SweepError("--set", where_key[len("--set."):] or None, error["message"])
        raise SweepError(where, where_key, error["message"])
    return report


def _check_names(sweep: schema.Sweep, trials: list[TrialSpec], where: str, report: CheckReport, strict: bool) -> None:
    methods, datasets = set(report.methods), set(report.datasets)
    lower_m = {m.lower(): m for m in methods}
    lower_d = {d.lower(): d for d in datasets}
    for name in dict.fromkeys(t.dataset for t in trials):
        if name in datasets:
            continue
        if name.lower() in lower_d:
            raise SweepError(where, "grid.dataset", f"{name!r}: write it {lower_d[name.lower()]!r}, as cil_core spells it (ids hash the name)")
        report.missing_datasets.append(name)
    for name in dict.fromkeys(t.approach for t in trials):
        if name in methods:
            continue
        if name.lower() in lower_m:
            raise SweepError(where, "grid.approach", f"{name!r}: write it {lower_m[name.lower()]!r}, as cil_core spells it (ids hash the name)")
        report.missing_approaches.append(name)
    if report.missing_datasets:
        message = f"cil_core has no data set {', '.join(map(repr, report.missing_datasets))} (it has: {', '.join(sorted(datasets))})"
        if strict:
            raise SweepError(where, "grid.dataset", message)
        report.warnings.append(message)
    if report.missing_approaches:
        message = (
            f"cil_core has no approach {', '.join(map(repr, report.missing_approaches))} yet "
            f"(it has: {', '.join(sorted(methods))})"
        )
        if sweep.skip_missing_approaches:
            report.warnings.append(message + "; those trials are left out (skip_missing_approaches)")
        elif strict:
            raise SweepError(where, "grid.approach", message)
        else:
            report.warnings.append(message + "; a run would stop here")
