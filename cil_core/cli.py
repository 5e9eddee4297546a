"""The command line: the only argparse in the package.

    python -m cil_core DATASET APPROACH SCENARIO INITIAL_CLASSES TOTAL_TASKS [options]
    python -m cil_core prepare DATASET --src DIR --data-root DIR
    python -m cil_core --list

Positional arguments follow the paper's own ``main.sh``; ``script/main.sh`` maps that
script's argument order onto this one. Errors a user can fix print one line and exit 2;
Ctrl-C and SIGTERM print one line and exit 130 (rerun the command to resume); a diverged
loss exits 3.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from typing import Any, Iterator

from .errors import TrainingDiverged, UserError


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cil_core",
        description="Train and evaluate one imbalanced class-incremental run.",
        epilog="Other commands: 'python -m cil_core prepare DATASET --src DIR --data-root DIR', "
        "'python -m cil_core --list'.",
    )
    parser.add_argument("dataset", help="cifar100, imagenet_subset, imagenet_1000, Food101, tinyimagenet100_lt, digits, synthetic, imagelist")
    parser.add_argument("approach", help="dgr, finetune, ... (case-insensitive; see --list)")
    parser.add_argument("scenario", help="conv, lt or ltio")
    parser.add_argument("initial_classes", type=int, help="classes in the first task")
    parser.add_argument("total_tasks", type=int, help="number of tasks, the first included")
    parser.add_argument("--gpu", type=int, default=None, help="CUDA device index (CPU if none is visible)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (overrides --gpu)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (init, batches, augmentation)")
    parser.add_argument("--order-seed", type=int, default=None, help="class-order seed (default: the paper's fixed order)")
    parser.add_argument("--lt-seed", type=int, default=None, help="long-tailed subsample seed (default 0, as the reference)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--data-root", default=None, help="the data set's folder")
    parser.add_argument("--out", default=None, help="run folder (default runs/DATASET_APPROACH_SCENARIO_I_T_sSEED)")
    parser.add_argument("--set", dest="set_items", action="append", default=[], metavar="KEY=VALUE",
                        help="any config key (lr_milestones=80,120) or approach option (dgr.dakd=false); repeatable")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def _prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cil_core prepare",
        description="Write train.txt/test.txt for a paper data set from your local copy (or download CIFAR-100).",
    )
    parser.add_argument("dataset", help="cifar100, imagenet_subset, imagenet_1000, Food101")
    parser.add_argument("--src", default=None, help="your local copy (Food-101's folder with meta/ and images/; ImageNet's folder with train/ and val/)")
    parser.add_argument("--data-root", required=True, help="where the lists (or CIFAR-100) go")
    return parser


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    from .config import parse_set_items
    from .errors import ConfigError

    values: dict[str, Any] = {
        "dataset": args.dataset,
        "approach": args.approach,
        "scenario": args.scenario,
        "initial_classes": args.initial_classes,
        "total_tasks": args.total_tasks,
    }
    for key in ("seed", "order_seed", "lt_seed", "epochs", "batch_size", "lr", "data_root", "out"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.gpu is not None and args.gpu < 0:
        raise ConfigError(f"--gpu must be a CUDA device index >= 0, got {args.gpu}; use --gpu 0 (or --device cpu)")
    if args.device is not None:
        values["device"] = args.device
    elif args.gpu is not None:
        import torch

        values["device"] = f"cuda:{args.gpu}" if torch.cuda.is_available() else "auto"
    values.update(parse_set_items(args.set_items))
    if "out" not in values:
        parts = [values[k] for k in ("dataset", "approach", "scenario", "initial_classes", "total_tasks")]
        values["out"] = "runs/" + "_".join(str(p) for p in parts) + f"_s{values.get('seed', 0)}"
    return values


def _list() -> int:
    from .registry import BACKBONES, DATASETS, METHODS, load_all

    load_all()
    print("approaches:")
    for name in sorted(METHODS):
        print(f"  {name:16s} {METHODS[name].summary}")
    print("datasets:")
    for name in sorted(DATASETS, key=str.lower):
        spec = DATASETS[name]
        classes = f"{spec.num_classes} classes" if spec.num_classes else "classes from train.txt"
        print(f"  {name:20s} {classes}, backbone {spec.protocol.backbone}, {spec.protocol.epochs} epochs")
    print("backbones: " + ", ".join(sorted(BACKBONES)))
    return 0


EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT) or SIGTERM, as a shell reports a Ctrl-C


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (a scheduler's or ``kill``'s stop) takes the Ctrl-C path: the same message and
    exit status, checkpoints of finished tasks kept. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["--list"]:
            return _list()
        if argv[:1] == ["prepare"]:
            args = _prepare_parser().parse_args(argv[1:])
            from .data.prepare import prepare

            print(prepare(args.dataset, args.src, args.data_root))
            return 0
        args = _run_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.WARNING if args.quiet else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S",
        )
        from .experiment import run_experiment

        with _sigterm_as_ctrl_c():
            result = run_experiment(_config_values(args))
    except KeyboardInterrupt:
        print(
            "interrupted; finished tasks are kept in their checkpoints: run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 3
    summary = {
        k: result[k]
        for k in (
            "avg_incremental_accuracy", "avg_incremental_accuracy_seen", "last_accuracy", "forgetting",
            "val_avg_incremental_accuracy", "val_last_accuracy", "wall_s",
        )
    }
    print(json.dumps({"out": result["config"]["out"], **summary}, indent=2))
    return 0
