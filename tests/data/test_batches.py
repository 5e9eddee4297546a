"""Batch pipelines: coverage, arrival labels, determinism, the batching rule, pipeline choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from cil_core.config import RunConfig
from cil_core.data.batches import LoaderPipeline, TensorPipeline, batch_bounds, len_batches, make_pipeline
from cil_core.data.scenarios import build_scenario
from cil_core.errors import ConfigError
from cil_core.registry import get_dataset

CPU = torch.device("cpu")


def config(dataset: str = "synthetic", **kw) -> RunConfig:
    """A config as the pipelines get it: resolved, so its augmentation is named (not None)."""
    kw.setdefault("augment", "reference")
    return RunConfig(dataset=dataset, approach="finetune", scenario="lt", initial_classes=10, total_tasks=2, **kw)


@pytest.fixture(scope="module")
def synthetic():
    ds = get_dataset("synthetic").load(config())
    s = build_scenario(ds.train.labels, ds.test.labels, 20, scenario="conv", initial_classes=10, total_tasks=2)
    return ds, s


def test_batch_bounds_merge_a_trailing_single():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # 1 left over: merged, no BatchNorm on one image
    assert batch_bounds(1, 4) == [(0, 1)]
    assert batch_bounds(9, 4, merge_singleton=False)[-1] == (8, 9)
    assert len_batches(9, 4) == 2 and len_batches(8, 4) == 2 and len_batches(0, 4) == 0


def test_tensor_train_batches_cover_indices_with_arrival_labels(synthetic):
    ds, s = synthetic
    pipe = make_pipeline(ds, s.label_map, config(), CPU)
    assert isinstance(pipe, TensorPipeline)
    idx = s.train_indices[1]
    seen, labels = [], []
    batches = list(pipe.train_batches(idx, 32, torch.Generator().manual_seed(0)))
    assert len(batches) == pipe.len_batches(len(idx), 32)
    for x, y in batches:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16) and y.dtype == torch.int64
        labels.append(y)
    labels = torch.cat(labels).numpy()
    # Arrival labels of task 1 (positions 10..19), each class's images exactly once.
    assert sorted(labels.tolist()) == sorted(s.label_map[ds.train.labels[idx]].tolist())
    assert set(labels.tolist()) == set(range(10, 20))
    # Shuffled: not in index order.
    assert labels.tolist() != s.label_map[ds.train.labels[idx]].tolist()


def test_tensor_train_batches_are_reproducible(synthetic):
    ds, s = synthetic
    pipe = make_pipeline(ds, s.label_map, config(), CPU)
    idx = s.train_indices[0]
    a = [x for x, _ in pipe.train_batches(idx, 64, torch.Generator().manual_seed(5))]
    b = [x for x, _ in pipe.train_batches(idx, 64, torch.Generator().manual_seed(5))]
    c = [x for x, _ in pipe.train_batches(idx, 64, torch.Generator().manual_seed(6))]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_tensor_eval_batches_in_order_without_augmentation(synthetic):
    ds, s = synthetic
    pipe = make_pipeline(ds, s.label_map, config(), CPU)
    idx = s.test_indices[0]
    xs, ys = zip(*pipe.eval_batches(idx, "test", 33))
    assert torch.cat(ys).tolist() == s.label_map[ds.test.labels[idx]].tolist()
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    expected = (ds.test.images[torch.as_tensor(idx)].float() / 255 - mean) / std
    torch.testing.assert_close(torch.cat(xs), expected)
    with pytest.raises(ValueError, match="split"):
        next(pipe.eval_batches(idx, "val", 8))


def test_loader_pipeline_on_tensor_data(synthetic):
    ds, s = synthetic
    pipe = make_pipeline(ds, s.label_map, config(pipeline="loader", num_workers=0), CPU)
    assert isinstance(pipe, LoaderPipeline)
    idx = s.train_indices[0][:49]
    batches = list(pipe.train_batches(idx, 16, torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [16, 16, 17]  # 49 = 3 x 16 + 1: the single merged
    got = torch.cat([y for _, y in batches]).sort().values.tolist()
    assert got == sorted(s.label_map[ds.train.labels[idx]].tolist())
    tensor_pipe = make_pipeline(ds, s.label_map, config(), CPU)
    (x_loader, _), = list(pipe.eval_batches(idx[:4], "train", 8))
    (x_tensor, _), = list(tensor_pipe.eval_batches(idx[:4], "train", 8))
    torch.testing.assert_close(x_loader, x_tensor, atol=1e-5, rtol=0)  # same test-time pixels


def test_tensor_pipeline_refused_for_files(tmp_path):
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {i % 2}\n")
    (tmp_path / "train.txt").write_text("".join(lines))
    (tmp_path / "test.txt").write_text("".join(lines))
    cfg = dataclasses.replace(config("imagenet_subset"), data_root=str(tmp_path), pipeline="tensor")
    ds = get_dataset("imagenet_subset").load(cfg)
    with pytest.raises(ConfigError, match="loader"):
        make_pipeline(ds, np.arange(100), cfg, CPU)
    cfg = dataclasses.replace(cfg, pipeline="auto", num_workers=0, image_size=24)
    pipe = make_pipeline(ds, np.arange(100), cfg, CPU)
    assert isinstance(pipe, LoaderPipeline)
    x, y = next(pipe.train_batches(np.arange(4), 4, torch.Generator().manual_seed(0)))
    assert x.shape == (4, 3, 24, 24) and y.tolist() != []
    x, y = next(pipe.eval_batches(np.arange(4), "test", 4))
    assert x.shape == (4, 3, 24, 24) and y.tolist() == [0, 1, 0, 1]


@pytest.mark.slow
def test_loader_with_persistent_workers_is_reproducible_across_epochs(synthetic):
    ds, s = synthetic
    cfg = config(pipeline="loader", num_workers=1)

    def two_epochs():
        pipe = make_pipeline(ds, s.label_map, cfg, CPU)
        gen = torch.Generator().manual_seed(0)
        out = []
        for task in (0, 1, 0):  # the same loader serves new index sets every epoch
            batches = list(pipe.train_batches(s.train_indices[task], 64, gen))
            labels = torch.cat([y for _, y in batches])
            assert sorted(labels.tolist()) == sorted(s.label_map[ds.train.labels[s.train_indices[task]]].tolist())
            out.append(batches[0][0])
        return out

    a, b = two_epochs(), two_epochs()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[2])  # a new shuffle and new crops each epoch
