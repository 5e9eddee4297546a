"""The data layer: data sets, scenarios (pure functions), augmentation and batch pipelines.

Importing this package does no work and imports no torch: the names below load on first use
(PEP 562), so ``cil_core.data.datasets`` (the specs: classes, protocol) stays torch-free for
resolving configs; data set specs register when that module is imported (``registry``).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DeviceAugment": "augment",
    "pil_test_transform": "augment",
    "pil_train_transform": "augment",
    "sample_resized_crop_params": "augment",
    "BatchPipeline": "batches",
    "LoaderPipeline": "batches",
    "TensorPipeline": "batches",
    "len_batches": "batches",
    "make_pipeline": "batches",
    "read_image_list": "imagelist",
    "verify_images": "imagelist",
    "PAPER_CLASS_ORDER": "scenarios",
    "build_scenario": "scenarios",
    "class_order": "scenarios",
    "long_tail_counts": "scenarios",
    "shot_groups": "scenarios",
    "task_splits": "scenarios",
    "thin_to_long_tail": "scenarios",
    "validation_split": "scenarios",
    "DatasetProtocol": "contract",
    "ImageSplit": "contract",
    "LoadedDataset": "contract",
    "Scenario": "contract",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
