"""``run_experiment``: the one Python entry point (CLI, orchestrator and tests all call it).

It resolves the config, loads the data set, builds the scenario, trains task by task
(resuming from ``out``'s checkpoints), and writes ``result.json``. Calling it twice with
the same ``out`` is safe: a finished run returns its result, an unfinished one resumes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import metrics as M
from .config import RunConfig, build_config, check_combinations, fingerprint, resolve_config
from .data.batches import make_pipeline
from .data.scenarios import build_scenario
from .engine.execution import Execution
from .engine.learner import Learner
from .errors import ConfigError
from .registry import get_backbone, get_dataset, get_method
from .results import SCHEMA_VERSION, atomic_write_json, git_sha, library_versions, validate_result

log = logging.getLogger(__name__)

_cpu_notice_given = False


def _cuda_setup() -> None:
    """Process-wide CUDA settings for training: a run's batches have one fixed shape, so
    cuDNN's autotuner (benchmark mode) picks the fastest convolution algorithm per shape
    once. Runs stay seed-reproducible, not bitwise identical across runs on CUDA."""
    torch.backends.cudnn.benchmark = True


def select_device(spec: str) -> torch.device:
    """``auto``: the first CUDA device if there is one, else the CPU (said once per process)."""
    global _cpu_notice_given
    if spec == "auto":
        if torch.cuda.is_available():
            _cuda_setup()
            return torch.device("cuda")
        if not _cpu_notice_given:
            log.warning("no CUDA device found: running on the CPU")
            _cpu_notice_given = True
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not re.fullmatch(r"cuda(:\d+)?", spec):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N with N >= 0, got {spec!r}; e.g. --device cuda:0")
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for but no CUDA device is visible; use --device cpu or auto")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        _cuda_setup()
        return device
    if spec == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_path(out: Path) -> None:
    """Refuse an ``--out`` that can never hold a run folder, without writing anything: an
    existing file, a path below a file, or (where the OS can tell) a folder not writable."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; give a folder path (a new one or a run folder)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out} lies below the file {parent}, so no folder can be made there; give another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {parent} is not writable; give a --out you can write to")


def _write_config(out: Path, config: RunConfig, fp: str) -> None:
    """Create the run folder and write ``config.json``: the run's first write."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", {"fingerprint": fp, **config.to_dict()})
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {out}: {exc.strerror or exc}; give a --out you can write to") from None


def _check_out_dir(out: Path, config: RunConfig, fp: str) -> dict[str, Any] | None:
    """Refuse to mix two configs in one folder; return a finished result if there is one."""
    saved = out / "config.json"
    if saved.exists():
        try:
            previous = json.loads(saved.read_text())
        except (OSError, ValueError):
            # damaged on disk (it is written atomically): rewritten below; the checkpoints and
            # result.json carry their own fingerprints, so nothing of another config is reused
            log.warning("%s is unreadable; it is written again", saved)
            previous = {"fingerprint": fp}
        if not isinstance(previous, dict):
            previous = {"fingerprint": fp}
        if previous.get("fingerprint") != fp:
            raise ConfigError(
                f"{out} holds a run of a different config (fingerprint {previous.get('fingerprint')} != {fp}); "
                "use another --out or delete that folder"
            )
    result_path = out / "result.json"
    if result_path.exists():
        try:
            result = json.loads(result_path.read_text())
            validate_result(result)
            if result.get("fingerprint") == fp and result.get("status") == "finished":
                return result
        except (ValueError, json.JSONDecodeError):
            log.warning("%s is unreadable; the run continues from its checkpoints", result_path)
    return None


def run_experiment(
    config: RunConfig | Mapping[str, Any],
    report: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run; return (and write to ``out/result.json``) its result."""
    started = time.perf_counter()
    if not isinstance(config, RunConfig):
        config = build_config(config)
    config = resolve_config(config)
    get_backbone(config.backbone)  # an unknown name is refused here, not when the model is built
    fp = fingerprint(config)
    out = Path(config.out).resolve() if config.out else None
    if out is not None:
        check_out_path(out)
        finished = _check_out_dir(out, config, fp)
        if finished is not None:
            log.info("%s already finished; nothing to do", out)
            return finished
    # Everything a user can get wrong is checked before the run folder is touched (device,
    # data, scenario), so a refused command leaves --out as it was and its corrected form runs.
    device = select_device(config.device)
    seed_everything(config.seed)
    spec = get_dataset(config.dataset).bind(config)
    check_combinations(config, spec)  # again with what only the data folder tells (image lists)
    dataset = spec.load(config)
    scenario = build_scenario(
        dataset.train.labels,
        dataset.test.labels,
        dataset.num_classes,
        scenario=config.scenario,
        initial_classes=config.initial_classes,
        total_tasks=config.total_tasks,
        rho=config.rho,
        lt_seed=config.lt_seed,
        order_seed=config.order_seed,
        val_fraction=config.val_fraction,
        already_long_tailed=dataset.already_long_tailed,
        n_max=dataset.n_max,
        profile_rule=spec.profile_rule,
    )
    pipeline = make_pipeline(dataset, scenario.label_map, config, device)
    if out is not None:
        _write_config(out, config, fp)
    learner = Learner(
        config=config,
        dataset=dataset,
        scenario=scenario,
        pipeline=pipeline,
        device=device,
        out_dir=out,
        method_cls=get_method(config.approach),
        report=report,
        fingerprint=fp,
    )
    rows = learner.run()
    result = assemble_result(config, fp, scenario, rows, learner.execution, time.perf_counter() - started)
    if out is not None:
        atomic_write_json(out / "result.json", result)
    return result


def assemble_result(config: RunConfig, fp: str, scenario: Any, rows: list[dict[str, Any]], execution: Execution, wall_s: float) -> dict[str, Any]:
    """``result.json``: the metrics, the run's identity, and what executed (``execution``)."""
    acc_matrix = [row["acc_row"] for row in rows]
    acc_seen = [row["acc_seen"] for row in rows]
    groups = M.shot_groups(scenario.counts_before_val)
    device_name = execution.device
    if execution.device.startswith("cuda"):
        device_name = f"{execution.device} ({execution.device_name})"
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "finished",
        "fingerprint": fp,
        "config": config.to_dict(),
        "seeds": {"seed": config.seed, "order_seed": config.order_seed, "lt_seed": config.lt_seed},
        "class_order": [int(c) for c in scenario.class_order],
        "task_classes": [[int(c) for c in task] for task in scenario.task_classes],
        "train_counts": [int(c) for c in scenario.train_counts],
        "counts_before_val": [int(c) for c in scenario.counts_before_val],
        "acc_matrix": acc_matrix,
        "acc_seen": acc_seen,
        **M.summarise(acc_matrix, acc_seen),
        "shot_acc": {name: [row["shot_acc"][name] for row in rows] for name in M.SHOT_NAMES},
        "shot_counts": {name: int((groups == gid).sum()) for gid, name in enumerate(M.SHOT_NAMES)},
        "per_class_acc": rows[-1]["per_class_acc"],
        "val_counts": [int(b - a) for a, b in zip(scenario.train_counts, scenario.counts_before_val)],
        **M.summarise_validation([row["val"] for row in rows]),
        "wall_s": wall_s,
        "task_wall_s": [row.get("task_wall_s") for row in rows],
        "device": device_name,
        "execution": execution.to_dict(),
        "versions": library_versions(),
        "git_sha": git_sha(),
    }
