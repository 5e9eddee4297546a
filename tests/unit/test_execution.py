"""Execution options on the CPU: bf16 autocast, channels-last and torch.compile run here as on
CUDA and are recorded; DGR's step under bf16 autocast stays close to its fp32 step."""

from __future__ import annotations

import copy
from dataclasses import replace as dataclasses_replace
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cil_core.backbones.resnet_cifar import resnet8
from cil_core.config import RunConfig
from cil_core.engine.execution import bf16_supported, resolve_execution
from cil_core.engine.learner import Phase, Step, TaskContext, backward_split
from cil_core.engine.network import IncrementalNet, LinearHead
from cil_core.experiment import run_experiment
from cil_core.methods.dgr import DGR, Options
from cil_core.results import validate_result

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16 (AVX-512 BF16 / AMX)")


def _dgr_step(model: IncrementalNet, teacher: IncrementalNet, x: torch.Tensor, y: torch.Tensor, bf16: bool):
    """One DGR training step (task 2 of 2: 6 old, 4 new classes) up to the gradients, as the
    Learner runs it: forward (and the teacher's) under autocast, loss and reweighted classifier
    gradient outside. Returns the loss terms, Phi, and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    n_old, n_seen = 6, 10
    counts = np.array([50, 40, 30, 20, 12, 8, 30, 25, 20, 15])
    train_counts = np.array([5, 5, 5, 5, 5, 5, 30, 25, 20, 15])
    ctx = TaskContext(task=1, num_tasks=2, n_old=n_old, n_seen=n_seen, new_indices=np.arange(4),
                      memory_indices=np.arange(30), class_counts=counts, train_counts=train_counts)
    method = DGR(learner=SimpleNamespace(device=CPU), options=Options())
    method.before_task(ctx)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
        with torch.no_grad():
            teacher_out = teacher(x)
    phase = Phase(name="train", indices=np.arange(4), epochs=1, lr=0.1, milestones=(), param_groups=[],
                  loss_terms=method.loss_terms, weight_decay=0.0, batch_size=len(y))
    step = Step(x=x, y=y, out=out, teacher_out=teacher_out, ctx=ctx, phase=phase)
    terms = method.loss_terms(step)
    backward_split(model.head, step, terms, method.classifier_gradient)
    grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in terms.items()}, method.accumulated.clone(), grads, out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@needs_bf16
def test_dgr_step_under_bf16_autocast_matches_fp32():
    """DGR's quantities (the loss terms, Phi, the classifier's weight and bias gradients) within
    1% relative (L2) of fp32; the backbone's gradient within cosine 0.97 of fp32's.

    Why these: bf16 keeps 8 significant bits, so autocast rounds each convolution's inputs and
    weights by up to 2^-9 (0.2%). In the forward pass BatchNorm (fp32 under autocast) renormalises
    after every convolution, so the features drift far less than 1% and everything DGR computes
    from them in fp32 inherits just that (measured: losses 1e-5, Phi 0.03%, classifier gradient
    0.4%). The backbone's own gradients are bf16 products all the way back through the
    convolutions' backward, where nothing renormalises (measured: 13% relative L2 on a fresh
    ResNet-8, cosine 0.99) -- that is autocast's ordinary cost, not DGR's, so it is checked as a
    direction only. A part of DGR left in bf16 (the logits, their gradients, Phi) is checked
    directly: under autocast they are float32."""
    torch.manual_seed(0)
    model = IncrementalNet(resnet8(), LinearHead(64))
    model.head.grow(10)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # a teacher that differs from the student, as after a task
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(32, 3, 32, 32)
    y = torch.cat([torch.arange(10), torch.randint(0, 10, (22,))])
    model.train()
    terms32, phi32, grads32, _ = _dgr_step(model, teacher, x, y, bf16=False)
    terms16, phi16, grads16, out16 = _dgr_step(model, teacher, x, y, bf16=True)
    assert out16["features"].dtype == torch.bfloat16  # the backbone really ran in bf16
    assert out16["logits"].dtype == torch.float32 and phi16.dtype == torch.float32
    assert set(terms32) == set(terms16) == {"ce", "kd"}
    for name in terms32:
        assert terms16[name] == pytest.approx(terms32[name], rel=0.01)
    assert _rel(phi16, phi32) < 0.01
    assert _rel(grads16["head.weight"], grads32["head.weight"]) < 0.01
    assert _rel(grads16["head.bias"], grads32["head.bias"]) < 0.01
    backbone = [n for n in grads32 if n.startswith("backbone.")]
    flat16 = torch.cat([grads16[n].flatten() for n in backbone])
    flat32 = torch.cat([grads32[n].flatten() for n in backbone])
    assert float(torch.nn.functional.cosine_similarity(flat16, flat32, dim=0)) > 0.97


def test_bf16_request_without_native_support_runs_fp32_and_says_so_once(monkeypatch, caplog):
    from cil_core.engine import execution

    monkeypatch.setattr(execution, "bf16_supported", lambda device: False)
    monkeypatch.setattr(execution, "_warned", set())
    config = RunConfig(dataset="digits", approach="finetune", scenario="lt", initial_classes=4, total_tasks=4, amp=True, channels_last=True)
    with caplog.at_level("WARNING"):
        first = resolve_execution(config, CPU)
        second = resolve_execution(config, CPU)
    assert first.precision == second.precision == "fp32"
    assert first.memory_format == "channels_last"
    assert sum("no native bf16" in r.message for r in caplog.records) == 1


def _epoch_losses(out) -> list[float]:
    records = map(json.loads, (out / "log.jsonl").read_text().splitlines())
    return [sum(r["loss"].values()) for r in records if r["phase"] != "eval"]


@needs_bf16
@pytest.mark.slow
def test_compiled_cpu_run_matches_eager_and_records_what_ran(tmp_path):
    """A real ``torch.compile`` (inductor, C++ codegen with gcc) on the CPU with bf16 autocast
    and channels-last: two digits tasks (the grown head recompiles once), each run's
    ``result.json`` records what ran, and the compiled run's per-epoch losses match the eager
    run's within 1% relative and its accuracies within 2 points.

    Why these tolerances: inductor fuses the bf16 graph and keeps some intermediates in fp32
    where eager rounds them to bf16, so individual activations differ by bf16's rounding (0.4%)
    and a few SGD steps carry that into the weights; the summed epoch loss then differs by well
    under 1% (measured 0.1%). Test accuracy on digits moves in steps of one image (about 0.3
    points of a 360-image test set), and a handful of borderline images may flip. A compile that
    changed the computation (wrong graph, stale head after growing) misses both by far."""
    base = {"dataset": "digits", "approach": "dgr", "scenario": "lt", "initial_classes": 5, "total_tasks": 2,
            "epochs": 1, "device": "cpu", "amp": True, "channels_last": True}
    eager = run_experiment({**base, "compile": False, "out": str(tmp_path / "eager")})
    compiled = run_experiment({**base, "compile": True, "out": str(tmp_path / "compiled")})
    for result, was_compiled in ((eager, False), (compiled, True)):
        validate_result(result)
        execution = result["execution"]
        assert (execution["precision"], execution["memory_format"], execution["compiled"]) == ("bf16", "channels_last", was_compiled)
        assert execution["device"] == "cpu" and execution["torch_threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "compiled" / "result.json").read_text())["execution"]["compiled"] is True
    losses_eager, losses_compiled = _epoch_losses(tmp_path / "eager"), _epoch_losses(tmp_path / "compiled")
    assert len(losses_eager) == len(losses_compiled) == 2
    assert losses_compiled == pytest.approx(losses_eager, rel=0.01)
    assert np.allclose(np.concatenate(compiled["acc_matrix"]), np.concatenate(eager["acc_matrix"]), atol=2.0)
    # checkpoints keep the plain module's keys (the compiled wrapper shares its parameters)
    state = torch.load(tmp_path / "compiled" / "checkpoints" / "task_001.pt", weights_only=False)
    assert not any("_orig_mod" in key for key in state["model"])


def test_execution_defaults_come_from_the_protocol_and_the_user_wins():
    from cil_core.config import resolve_config
    from cil_core.data.datasets import CPU_PROTOCOL

    def resolved(dataset: str, **kw) -> tuple:
        cfg = resolve_config(RunConfig(dataset=dataset, approach="finetune", scenario="lt", initial_classes=5, total_tasks=2, **kw))
        return cfg.amp, cfg.channels_last

    assert resolved("cifar100") == (False, True)  # paper protocol: fp32 as the reference code, channels-last
    assert resolved("digits") == (False, False)  # no bf16 gain for its 8x8 convnet
    assert (CPU_PROTOCOL.amp, CPU_PROTOCOL.channels_last) == (True, True)  # tinyimagenet100_lt, imagelist: measured faster
    assert resolved("digits", amp=True) == (True, False)
    assert resolved("cifar100", amp=True, channels_last=False) == (True, False)


def test_result_validation_of_the_execution_record():
    from cil_core.engine.execution import Execution
    from cil_core.results import REQUIRED_KEYS, SCHEMA_VERSION

    result = {key: None for key in REQUIRED_KEYS} | {"schema_version": SCHEMA_VERSION}
    validate_result(result)  # without the record (written before it existed): still a valid result
    good = Execution("cpu", "AMD EPYC", "bf16", "channels_last", False, 2).to_dict()
    validate_result({**result, "execution": good})
    for key, bad in (("precision", "fp16"), ("memory_format", "nhwc"), ("compiled", "yes"), ("torch_threads", None)):
        with pytest.raises(ValueError, match=f"execution.{key}"):
            validate_result({**result, "execution": {**good, key: bad}})


def test_compile_on_a_cpu_without_a_compiler_is_refused_before_training(monkeypatch):
    from cil_core.engine import execution
    from cil_core.errors import ConfigError

    monkeypatch.setattr(execution.shutil, "which", lambda name: None)
    config = RunConfig(dataset="digits", approach="finetune", scenario="lt", initial_classes=4, total_tasks=4, compile=True)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        resolve_execution(config, CPU)
    assert resolve_execution(dataclasses_replace(config, compile=False), CPU).compiled is False
