"""The tensor-resident pipeline on the GPU: images resident on the device, batches augmented
there, every index once per epoch, reproducible per seed, test-time pixels equal to the CPU's."""

from __future__ import annotations

import torch

from cil_core.config import RunConfig
from cil_core.data.batches import TensorPipeline, make_pipeline
from cil_core.data.scenarios import build_scenario
from cil_core.registry import get_dataset


def _setup():
    config = RunConfig(dataset="synthetic", approach="finetune", scenario="lt", initial_classes=10, total_tasks=2, image_size=32)
    ds = get_dataset("synthetic").load(config)
    s = build_scenario(ds.train.labels, ds.test.labels, 20, scenario="conv", initial_classes=10, total_tasks=2)
    return config, ds, s


def test_tensor_pipeline_on_cuda():
    config, ds, s = _setup()
    cuda = torch.device("cuda")
    pipe = make_pipeline(ds, s.label_map, config, cuda)
    assert isinstance(pipe, TensorPipeline) and pipe.images["train"].is_cuda
    idx = s.train_indices[1]
    batches = list(pipe.train_batches(idx, 32, torch.Generator().manual_seed(0)))
    assert all(x.is_cuda and y.is_cuda and x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) for x, y in batches)
    labels = torch.cat([y for _, y in batches]).cpu()
    assert sorted(labels.tolist()) == sorted(s.label_map[ds.train.labels[idx]].tolist())
    again = list(pipe.train_batches(idx, 32, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    other = next(iter(pipe.train_batches(idx, 32, torch.Generator().manual_seed(1))))[0]
    assert not torch.equal(batches[0][0], other)
    cpu_pipe = make_pipeline(ds, s.label_map, config, torch.device("cpu"))
    test_idx = s.test_indices[0]
    x_gpu = torch.cat([x for x, _ in pipe.eval_batches(test_idx, "test", 64)]).cpu()
    x_cpu = torch.cat([x for x, _ in cpu_pipe.eval_batches(test_idx, "test", 64)])
    torch.testing.assert_close(x_gpu, x_cpu, atol=1e-5, rtol=1e-5)
