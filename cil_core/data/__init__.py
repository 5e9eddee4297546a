"""The data layer: data sets, scenarios (pure functions), augmentation and batch pipelines.

Importing this package does no work; data set specs register when
``cil_core.data.datasets`` is imported (``registry.load_all`` does it).
"""

from .augment import DeviceAugment, pil_test_transform, pil_train_transform, sample_resized_crop_params
from .batches import BatchPipeline, LoaderPipeline, TensorPipeline, len_batches, make_pipeline
from .imagelist import read_image_list, verify_images
from .scenarios import (
    PAPER_CLASS_ORDER,
    build_scenario,
    class_order,
    long_tail_counts,
    shot_groups,
    task_splits,
    thin_to_long_tail,
    validation_split,
)
from .types import DatasetProtocol, ImageSplit, LoadedDataset, Scenario

__all__ = [
    "PAPER_CLASS_ORDER",
    "BatchPipeline",
    "DatasetProtocol",
    "DeviceAugment",
    "ImageSplit",
    "LoadedDataset",
    "LoaderPipeline",
    "Scenario",
    "TensorPipeline",
    "build_scenario",
    "class_order",
    "len_batches",
    "long_tail_counts",
    "make_pipeline",
    "pil_test_transform",
    "pil_train_transform",
    "read_image_list",
    "sample_resized_crop_params",
    "shot_groups",
    "task_splits",
    "thin_to_long_tail",
    "validation_split",
    "verify_images",
]
