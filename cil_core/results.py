"""``result.json``: the schema every consumer (orchestrator, tables, tests) reads.

Keys (``SCHEMA_VERSION`` 2; documented in the README):
``schema_version, status, config, seeds, class_order, task_classes, train_counts,
acc_matrix, task_avg_acc, acc_seen, avg_incremental_accuracy,
avg_incremental_accuracy_seen, last_accuracy, forgetting, shot_acc, shot_counts,
per_class_acc, wall_s, task_wall_s, device, execution, versions, git_sha``, and the validation
hold-out's figures ``VALIDATION_KEYS`` (version 2 added them).
``execution`` is what ran (``cil_core.engine.execution.Execution``): ``device``,
``device_name``, ``precision`` ("fp32"/"bf16"), ``memory_format``
("contiguous"/"channels_last"), ``compiled``, ``torch_threads``. Every new result has it and
it is validated when present; results written before it existed lack it and stay valid (they
ran fp32 on the CPU whatever their config's ``amp`` said: the option was CUDA-only then), so
nothing re-assembles them with a record of what did not run.
Files are written atomically so a reader never sees half a file.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from .atomic_io import atomic_write_bytes, atomic_write_json  # noqa: F401  (re-exported)

SCHEMA_VERSION = 2

# The validation hold-out's figures (cil_core.metrics.summarise_validation, plus val_counts).
VALIDATION_KEYS = (
    "val_counts", "val_acc_matrix", "val_task_avg_acc", "val_acc_seen", "val_avg_incremental_accuracy",
    "val_avg_incremental_accuracy_seen", "val_last_accuracy", "val_images", "val_classes_without_images",
    "val_per_class_acc",
)

REQUIRED_KEYS = (
    "schema_version", "status", "config", "seeds", "class_order", "task_classes", "train_counts",
    "acc_matrix", "task_avg_acc", "acc_seen", "avg_incremental_accuracy",
    "avg_incremental_accuracy_seen", "last_accuracy", "forgetting", "shot_acc", "shot_counts",
    "per_class_acc", "wall_s", "task_wall_s", "device", "versions", "git_sha", *VALIDATION_KEYS,
)

EXECUTION_KEYS = {"device": str, "device_name": str, "precision": str, "memory_format": str, "compiled": bool, "torch_threads": int}
PRECISIONS = ("fp32", "bf16")
MEMORY_FORMATS = ("contiguous", "channels_last")

# Keys that legitimately differ between two runs of the same config (timing, host).
NONDETERMINISTIC_KEYS = ("wall_s", "task_wall_s", "device", "execution", "versions", "git_sha")


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from . import __version__

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cil_core": __version__,
    }
    if torch.cuda.is_available():
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
    return versions


def validate_result(result: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"result.json lacks keys: {', '.join(missing)}")
    if result["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"result.json schema_version {result['schema_version']} != {SCHEMA_VERSION}")
    if "execution" not in result:
        return
    execution = result["execution"]
    if not isinstance(execution, dict):
        raise ValueError(f"result.json execution must be an object, got {execution!r}")
    for key, kind in EXECUTION_KEYS.items():
        if not isinstance(execution.get(key), kind):
            raise ValueError(f"result.json execution.{key} must be a {kind.__name__}, got {execution.get(key)!r}")
    if execution["precision"] not in PRECISIONS:
        raise ValueError(f"result.json execution.precision must be one of {PRECISIONS}, got {execution['precision']!r}")
    if execution["memory_format"] not in MEMORY_FORMATS:
        raise ValueError(f"result.json execution.memory_format must be one of {MEMORY_FORMATS}, got {execution['memory_format']!r}")
