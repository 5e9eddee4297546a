"""cil_core: imbalanced class-incremental learning, with DGR (CVPR 2024) and its baselines.

``run_experiment(config, report=None)`` is the one entry point; importing the package does
no work and does not import torch until that function is used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def run_experiment(config: Any, report: Any = None) -> dict:
    """Train and evaluate one run (see :mod:`cil_core.experiment`)."""
    from .experiment import run_experiment as _run

    return _run(config, report=report)


__all__ = ["run_experiment", "__version__"]
