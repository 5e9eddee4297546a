"""CUDA tests: marked ``cuda`` and skipped with the reason where no CUDA device is visible.

CI is CPU-only, so these run only where a GPU is (``pytest -m cuda``; ``benchmarks/gpu_check.sh``
runs them first). Every test in this folder gets the marker and the skip here, so a new test
cannot forget either.
"""

from __future__ import annotations

import pytest
import torch

NO_CUDA = "no CUDA device visible (torch.cuda.is_available() is False): CUDA tests skipped"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/cuda/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.cuda)
            if not torch.cuda.is_available():
                item.add_marker(pytest.mark.skip(reason=NO_CUDA))
