"""Checks a sweep's names and options against ``cil_core`` -- run in a child process.

``python -m orchestrator.cil_check < request.json`` prints one JSON object. It imports
``cil_core`` (and so torch); the orchestrator itself never imports this module, it runs it
with :func:`orchestrator.validate.check_with_cil_core`, so the orchestrator process stays
torch-free while every option is still checked by the one source of truth, ``RunConfig``.

Request: ``{"blocks": [{"where", "options", "pattern"}], "trials": [{"id", "config"}]}``.
Reply: ``{"methods", "datasets", "errors": [{"where", "message"}], "warnings": [...]}``.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _first(trials: list[dict[str, Any]], pattern: dict[str, Any], methods: set[str], datasets: set[str]) -> dict[str, Any] | None:
    for trial in trials:
        config = trial["config"]
        if config["approach"] not in methods or config["dataset"] not in datasets:
            continue
        if all(config.get(k) == v for k, v in pattern.items()):
            return config
    return None


def check(request: dict[str, Any]) -> dict[str, Any]:
    from cil_core.config import build_config
    from cil_core.errors import UserError
    from cil_core.registry import dataset_names, method_names

    methods = set(method_names())
    datasets = set(dataset_names())
    errors: list[dict[str, str]] = []
    warnings: list[str] = []
    trials = request.get("trials", [])
    required = ("dataset", "approach", "scenario", "initial_classes", "total_tasks")

    for block in request.get("blocks", []):
        base_config = _first(trials, block.get("pattern", {}), methods, datasets)
        if base_config is None:
            continue
        base = {k: base_config[k] for k in required}
        for key, value in block.get("options", {}).items():
            if "." in key and key.split(".", 1)[0].lower() not in {m.lower() for m in methods}:
                warnings.append(f"{block['where']}.{key}: approach {key.split('.', 1)[0]!r} is not in cil_core; option not checked")
                continue
            try:
                build_config({**base, key: value})
            except UserError as exc:
                errors.append({"where": f"{block['where']}.{key}", "message": str(exc)})
            except Exception as exc:  # noqa: BLE001 - report, do not crash the check
                errors.append({"where": f"{block['where']}.{key}", "message": f"{type(exc).__name__}: {exc}"})

    if not errors:
        checked: set[str] = set()
        for trial in trials:
            config = trial["config"]
            if config["approach"] not in methods or config["dataset"] not in datasets:
                continue
            key = json.dumps(config, sort_keys=True, default=str)
            if key in checked:
                continue
            checked.add(key)
            try:
                build_config({k: v for k, v in config.items() if k != "out"})
            except UserError as exc:
                errors.append({"where": f"trial {trial['id']}", "message": str(exc)})
                break
    return {"methods": sorted(methods), "datasets": sorted(datasets), "errors": errors, "warnings": warnings}


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        reply = check(request)
    except ImportError as exc:
        reply = {"import_error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
