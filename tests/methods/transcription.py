"""Machinery of the transcription tests: run an approach through the REAL engine on tiny random
tensors, record every optimiser step, and compare it with a slow transcription of the
reference code's formulas.

- :func:`tiny_run` builds a :class:`~cil_core.engine.learner.Learner` (the real one: its task
  loop, ``run_phase``, memory, teacher, extra stages) on random images with a stand-in
  pipeline (no augmentation; batches in the order given), runs it, and returns the records.
- :class:`StepRecord`: per optimiser step, the phase, the batch, the loss terms, a copy of the
  model and of the teacher as they were at that step, and per parameter (by name) its value
  before the step, its gradient and its group's learning rate.
- The ``ref_*`` functions transcribe the reference code's formulas with Python loops over
  samples and classes (slow, obviously correct), as tests/unit/test_dgr.py does for DGR.
- :func:`assert_matches` compares the loss to 1e-5 relative and each parameter's gradient to 1e-5
  of the norm of the step's whole gradient.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence
from unittest import mock

import numpy as np
import pytest
import torch

from cil_core.config import RunConfig
from cil_core.data.contract import DatasetProtocol, ImageSplit, LoadedDataset, Scenario
from cil_core.engine.learner import Learner
from cil_core.registry import get_method

RTOL = 1e-5


@dataclass
class StepRecord:
    task: int
    phase: str
    x: torch.Tensor
    y: torch.Tensor
    terms: dict[str, float]
    model: torch.nn.Module  # a copy, parameters as at this step (before the update)
    teacher: torch.nn.Module | None
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter values before the step
    grads: dict[str, torch.Tensor] = field(default_factory=dict)  # their gradients
    lrs: dict[str, float] = field(default_factory=dict)  # their group's learning rate
    extra: dict[str, Any] = field(default_factory=dict)  # what the loss terms saw (mixup's lam, perm)


class FixedPipeline:
    """The engine's batch pipeline without augmentation: ``indices`` in the given order."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.splits = {"train": train, "test": test}

    def len_batches(self, n: int, batch_size: int) -> int:
        return math.ceil(n / batch_size)

    def _batches(self, split: str, indices: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.splits[split]
        indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        for start in range(0, len(indices), batch_size):
            rows = indices[start : start + batch_size]
            yield x[rows], y[rows]

    def train_batches(self, indices: np.ndarray, batch_size: int, generator: torch.Generator, shuffle: bool = True):
        return self._batches("train", indices, batch_size)

    def eval_batches(self, indices: np.ndarray, split: str, batch_size: int):
        return self._batches(split, indices, batch_size)


def _scenario(counts: list[list[int]], test_per_class: int) -> tuple[Scenario, np.ndarray, np.ndarray]:
    """Tasks of classes numbered in arrival order; ``counts[t][k]`` training images of task t's k-th class."""
    train_labels, test_labels, task_classes, train_indices, test_indices = [], [], [], [], []
    c = 0
    for task_counts in counts:
        classes = list(range(c, c + len(task_counts)))
        task_classes.append(classes)
        start = len(train_labels)
        for cls, n in zip(classes, task_counts):
            train_labels += [cls] * n
        train_indices.append(np.arange(start, len(train_labels)))
        start = len(test_labels)
        for cls in classes:
            test_labels += [cls] * test_per_class
        test_indices.append(np.arange(start, len(test_labels)))
        c += len(task_counts)
    per_class = np.bincount(train_labels, minlength=c)
    scenario = Scenario(
        class_order=list(range(c)), label_map=np.arange(c), task_classes=task_classes,
        train_indices=train_indices, val_indices=[np.zeros(0, dtype=np.int64)] * len(counts),
        test_indices=test_indices, train_counts=per_class, counts_before_val=per_class,
    )
    return scenario, np.asarray(train_labels), np.asarray(test_labels)


@contextmanager
def _recording(learner: Learner, records: list[StepRecord]) -> Iterator[None]:
    real_run_phase = Learner.run_phase
    real_step = torch.optim.SGD.step

    def run_phase(self: Learner, phase: Any) -> None:
        inner = phase.loss_terms

        def recorded(step: Any) -> dict[str, torch.Tensor]:
            terms = inner(step)
            mixup = step.out.get("mixup") if isinstance(step.out, dict) else None
            records.append(
                StepRecord(
                    task=step.ctx.task, phase=phase.name, x=step.x.detach().clone(), y=step.y.clone(),
                    terms={k: float(v.detach()) for k, v in terms.items()},
                    model=copy.deepcopy(self.model),
                    teacher=None if self.teacher is None or not phase.use_teacher else copy.deepcopy(self.teacher),
                    extra={} if mixup is None else {"lam": mixup["lam"], "perm": mixup["perm"].clone()},
                )
            )
            return terms

        real_run_phase(self, dataclasses.replace(phase, loss_terms=recorded))

    def step(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        names = {id(p): n for n, p in learner.model.named_parameters()}
        if records:
            record = records[-1]
            for g, group in enumerate(optimizer.param_groups):
                for j, p in enumerate(group["params"]):
                    name = names.get(id(p), f"group{g}.{j}")
                    record.values[name] = p.detach().clone()
                    record.lrs[name] = group["lr"]
                    if p.grad is not None:
                        record.grads[name] = p.grad.detach().clone()
        return real_step(optimizer, *args, **kwargs)

    with mock.patch.object(Learner, "run_phase", run_phase), mock.patch.object(torch.optim.SGD, "step", step):
        yield


def tiny_run(
    approach: str,
    options: dict[str, Any] | None = None,
    *,
    counts: Sequence[Sequence[int]] = ((6, 5), (4, 5)),
    backbone: str = "convnet",
    image_size: int = 8,
    epochs: int = 1,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    memory_per_class: int = 2,
    augment_family: str = "cifar",
    seed: int = 0,
) -> tuple[Learner, list[StepRecord]]:
    """Run ``approach`` through the real Learner, one batch per epoch (the batch holds every
    image), and return the learner and every step's record. ``counts[t][k]``: training images
    of task t's k-th class; ``options``: the approach's options (``--set APPROACH.KEY``)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    counts = [list(c) for c in counts]
    scenario, train_labels, test_labels = _scenario(counts, test_per_class=2)
    gen = torch.Generator().manual_seed(seed + 1)
    train_x = torch.randn(len(train_labels), 3, image_size, image_size, generator=gen)
    test_x = torch.randn(len(test_labels), 3, image_size, image_size, generator=gen)
    protocol = DatasetProtocol(backbone=backbone, epochs=epochs, lr_milestones=(), weight_decay=weight_decay, image_size=image_size)
    dataset = LoadedDataset(
        name="transcription", num_classes=len(scenario.class_order),
        train=ImageSplit(labels=train_labels), test=ImageSplit(labels=test_labels), protocol=protocol,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), augment_family=augment_family,
    )
    method_cls = get_method(approach)
    config = RunConfig(
        dataset="transcription", approach=approach, scenario="lt", initial_classes=len(counts[0]),
        total_tasks=len(counts), seed=seed, epochs=epochs, lr=lr, lr_milestones=(), weight_decay=weight_decay,
        batch_size=len(train_labels) + 100, memory_per_class=memory_per_class, backbone=backbone,
        image_size=image_size, device="cpu", checkpoint=False, amp=False,
        options={method_cls.name: dict(options or {})},
    )
    pipeline = FixedPipeline(
        (train_x, torch.as_tensor(train_labels)), (test_x, torch.as_tensor(test_labels))
    )
    learner = Learner(
        config=config, dataset=dataset, scenario=scenario, pipeline=pipeline, device=torch.device("cpu"),
        out_dir=None, method_cls=method_cls,
    )
    records: list[StepRecord] = []
    with _recording(learner, records):
        learner.run()
    return learner, records


def steps(records: list[StepRecord], task: int, phase: str) -> list[StepRecord]:
    return [r for r in records if r.task == task and r.phase == phase]


def live_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The recorded model copy's parameters by name, every one differentiable (the reference's
    optimiser decides which of them the comparison includes)."""
    named = dict(model.named_parameters())
    for p in named.values():
        p.requires_grad_(True)
    return named


def reference_grads(loss: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradients of the transcription's ``loss`` w.r.t. the parameters the reference's optimiser
    holds (a parameter the loss does not reach gets zeros)."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True, retain_graph=True)
    return {n: (torch.zeros_like(params[n]) if g is None else g) for n, g in zip(names, grads)}


def assert_matches(record: StepRecord, expected_loss: torch.Tensor, expected: dict[str, torch.Tensor]) -> None:
    """The engine's summed loss and every recorded gradient equal the transcription's."""
    record_grads = {n: g for n, g in record.grads.items() if g.numel() > 0}
    total = sum(record.terms.values())
    assert total == _approx(float(expected_loss.detach())), f"{record.phase}: loss {total} vs reference {float(expected_loss.detach())}"
    assert set(expected) == set(record_grads), f"{record.phase}: trained {sorted(record_grads)} vs reference {sorted(expected)}"
    # Relative to the whole step's gradient: a parameter whose gradient is a sum of cancelling
    # terms (sigma) keeps only float32's absolute accuracy.
    scale = math.sqrt(sum(float(g.norm()) ** 2 for g in expected.values()))
    for name, want in expected.items():
        err = float((record_grads[name] - want).norm())
        assert err <= RTOL * max(scale, 1e-12), f"{record.phase}: gradient of {name}: |diff| {err:.3g} vs |ref| {float(want.norm()):.3g} (step {scale:.3g})"


def _approx(value: float) -> Any:
    return pytest.approx(value, rel=RTOL, abs=1e-7)


# -- the reference code's formulas, transcribed --------------------------------------------
def ref_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``nn.CrossEntropyLoss()``: mean over samples of ``log sum_j exp z_j - z_y``."""
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        total = total + torch.log(sum(torch.exp(logits[i, j]) for j in range(logits.shape[1]))) - logits[i, y[i]]
    return total / logits.shape[0]


def ref_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / (torch.sqrt((a * a).sum()) * torch.sqrt((b * b).sum()))


def ref_cosine_linear(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(F.normalize(x), F.normalize(W))``: one cosine per (sample, row)."""
    rows = [torch.stack([ref_cosine(features[i], weight[r]) for r in range(weight.shape[0])]) for i in range(features.shape[0])]
    return torch.stack(rows)


def ref_reduce_proxies(out: torch.Tensor, nb_proxy: int) -> torch.Tensor:
    """PODNet's ``reduce_proxies``: per class, ``sum_k softmax_k(s_k) * s_k`` over its proxies."""
    rows = []
    for i in range(out.shape[0]):
        per_class = []
        for c in range(out.shape[1] // nb_proxy):
            s = out[i, c * nb_proxy : (c + 1) * nb_proxy]
            z = sum(torch.exp(s[k]) for k in range(nb_proxy))
            per_class.append(sum(torch.exp(s[k]) / z * s[k] for k in range(nb_proxy)))
        rows.append(torch.stack(per_class))
    return torch.stack(rows)


def ref_cosine_embedding_loss(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``nn.CosineEmbeddingLoss()(f, g, ones)``: mean of ``1 - cos(f_i, g_i)``."""
    return sum(1 - ref_cosine(f[i], g[i]) for i in range(f.shape[0])) / f.shape[0]


def ref_margin_ranking(scores: torch.Tensor, y: torch.Tensor, n_old: int, k: int, margin: float) -> torch.Tensor:
    """LUCIR's ``MarginRankingLoss(margin)(gt.repeat(K), topK new scores, ones)``: the mean over
    old-class samples and their K hardest new classes of ``max(0, margin - gt + neg)``."""
    pairs = []
    for i in range(scores.shape[0]):
        if int(y[i]) >= n_old:
            continue
        hardest = sorted(range(n_old, scores.shape[1]), key=lambda j: -float(scores[i, j].detach()))[:k]
        pairs += [torch.clamp(margin - scores[i, y[i]] + scores[i, j], min=0) for j in hardest]
    return sum(pairs) / len(pairs) if pairs else scores.new_zeros(())


def ref_pod_spatial(old_maps: list[torch.Tensor], new_maps: list[torch.Tensor]) -> torch.Tensor:
    """``pod_spatial_loss(..., collapse_channels="spatial")``: per stage, squared maps summed over
    the width (``a.sum(dim=3)``) and the height (``a.sum(dim=2)``), concatenated, L2-normalised,
    the mean over the batch of the Euclidean distance; averaged over stages."""
    total = new_maps[0].new_zeros(())
    for a, b in zip(old_maps, new_maps):
        a, b = a.pow(2), b.pow(2)
        layer = a.new_zeros(())
        for i in range(a.shape[0]):
            va = torch.cat([a[i].sum(dim=2).flatten(), a[i].sum(dim=1).flatten()])
            vb = torch.cat([b[i].sum(dim=2).flatten(), b[i].sum(dim=1).flatten()])
            va = va / torch.sqrt((va * va).sum()).clamp_min(1e-12)
            vb = vb / torch.sqrt((vb * vb).sum()).clamp_min(1e-12)
            layer = layer + torch.sqrt(((va - vb) ** 2).sum())
        total = total + layer / a.shape[0]
    return total / len(new_maps)


def ref_lt_cil_nca(similarities: torch.Tensor, y: torch.Tensor, margin: float = 0.6) -> torch.Tensor:
    """LT-CIL's ``nca(outputs, targets)`` with its defaults (``scale=1``,
    ``exclude_pos_denominator=False``): ``similarities = scale * (similarities - margin)``
    (every class) then ``F.cross_entropy``."""
    return ref_cross_entropy(1.0 * (similarities - margin), y)


def _downsample_a(x: torch.Tensor) -> torch.Tensor:
    """``DownsampleA``: ``AvgPool2d(kernel_size=1, stride=2)`` then ``torch.cat((x, x.mul(0)), 1)``."""
    x = torch.nn.functional.avg_pool2d(x, kernel_size=1, stride=2)
    return torch.cat((x, x.mul(0)), 1)


def ref_podnet_cifar_forward(net: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """``resnet32_podnet.py``'s ``CifarResNet.forward`` with ``net``'s convolutions and batch
    norms: ``relu(bn1(conv1(x)))``; in every block ``relu(bn1(conv1(x)))``, ``bn2(conv2(.))`` plus
    the residual (``DownsampleA`` where the shape changes), no ReLU after the sum
    (``last_relu=False`` in every layer); the stage outputs are the maps, the average-pooled
    last one the features."""
    out = torch.relu(net.bn1(net.conv1(x)))
    maps = []
    for stage in net.stages:
        for block in stage:
            residual = out
            h = torch.relu(block.bn1(block.conv1(out)))
            h = block.bn2(block.conv2(h))
            if h.shape != residual.shape:
                residual = _downsample_a(out)
            out = h + residual
        maps.append(out)
    return {"features": out.mean(dim=(2, 3)), "maps": maps}
