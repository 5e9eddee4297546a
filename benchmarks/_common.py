"""Shared helpers of the benchmarks: thread setup, interleaved timing, medians."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch


def setup_threads(device: torch.device, threads: int) -> int:
    """``threads`` torch threads on the CPU (0: torch's default), cuDNN benchmark mode on CUDA;
    returns the number of threads used.

    On a shared, loaded machine two OpenMP threads on two busy cores wait on each other at
    every barrier (a ResNet-32 step measured 4x slower with 2 threads than with 1 here), so
    the benchmarks default to 1 thread on the CPU; pass ``--threads 0`` on an idle machine.
    """
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as cil_core.experiment.select_device sets it for runs
    return torch.get_num_threads()


def syncer(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def interleaved(
    fns: dict[str, Callable[[], None]],
    rounds: int,
    warmup: int,
    sync: Callable[[], None],
    cpu_clock: Callable[[], float] = time.process_time,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Run every function once per round, the order rotated each round.

    Returns per name the wall times and the CPU times (``cpu_clock``: this process's CPU
    seconds by default) of the timed rounds. Rotating the order keeps a fixed position in
    the round (first after a slow neighbour, say) from favouring one variant. On a shared
    CPU, CPU seconds of a one-thread process measure the work done, whatever else runs;
    wall seconds also measure the waiting.
    """
    names = list(fns)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            t0, c0 = time.perf_counter(), cpu_clock()
            fns[name]()
            sync()
            t1, c1 = time.perf_counter(), cpu_clock()
            if r >= warmup:
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
    return wall, cpu


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num / den`` measured in the same round (robust to load drift)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def cpu_note() -> str:
    try:
        load = os.getloadavg()
        return f"cpus={os.cpu_count()} loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    except OSError:
        return f"cpus={os.cpu_count()}"
