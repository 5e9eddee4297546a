"""The Learner: the one task loop, epoch loop and training step of the project.

Every approach runs through here; approaches only override the hooks of
:class:`~cil_core.methods.base.Method`. This is the only module that calls ``backward``.

Hot-path rules: no host synchronisation inside an epoch (losses and accuracy are summed on
the device and read once per epoch), per-class work is tensor indexing, and the data
pipeline hands over ready, normalised device batches.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from .. import metrics as M
from ..checkpoint import latest_valid_checkpoint, save_checkpoint
from ..config import RunConfig
from ..data.contract import LoadedDataset, Scenario
from ..errors import TrainingDiverged
from ..memory import ExemplarMemory, herding_select
from ..registry import get_backbone
from .execution import resolve_execution
from .network import IncrementalNet

log = logging.getLogger(__name__)


@dataclass
class TaskContext:
    """What a method needs to know about the task being learned."""

    task: int
    num_tasks: int
    n_old: int  # classes seen before this task: arrival positions [0, n_old)
    n_seen: int  # classes seen including this task: [0, n_seen)
    new_indices: np.ndarray  # training-split indices of the new classes' images
    memory_indices: np.ndarray  # training-split indices of the exemplars (old classes)
    class_counts: np.ndarray  # per seen class: images in the full training data so far (after the hold-out)
    train_counts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per seen class, in this task's training set

    @property
    def new_classes(self) -> range:
        return range(self.n_old, self.n_seen)


@dataclass
class Step:
    """One batch: inputs, arrival-position labels, the model's and the teacher's outputs."""

    x: torch.Tensor
    y: torch.Tensor
    out: dict[str, Any]
    teacher_out: dict[str, Any] | None
    ctx: TaskContext
    phase: "Phase"


@dataclass
class Phase:
    """One stage of training on a task (the main phase, or an approach's extra stage)."""

    name: str
    indices: np.ndarray
    epochs: int
    lr: float
    milestones: tuple[int, ...]
    param_groups: list[dict[str, Any]]
    loss_terms: Callable[[Step], dict[str, torch.Tensor]]
    weight_decay: float
    batch_size: int
    momentum: float = 0.9
    lr_gamma: float = 0.1
    balanced: bool = False  # resample each epoch so every class is drawn equally often
    # Called once per epoch: that epoch's training indices in batch order (not shuffled again),
    # replacing ``indices``/``balanced`` (the 2-stage recipe's class-aware sampler).
    epoch_indices: Callable[[], np.ndarray] | None = None
    forward: Callable[[torch.Tensor], dict[str, Any]] | None = None  # default: the model
    train_mode: bool = True  # False: the model stays in eval mode (frozen BatchNorm statistics)
    use_teacher: bool = True
    split_classifier_gradient: bool = False
    classifier_gradient: Callable[[Step, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]] | None = None
    # "step": MultiStepLR(milestones, lr_gamma); "cosine": cosine annealing to 0 over the epochs;
    # "lambda": group g's lr is its initial lr x ``lr_lambdas[g](epoch)``; "patience": FACIL's
    # rule (below).
    schedule: str = "step"
    lr_lambdas: list[Callable[[int], float]] | None = None
    # schedule="patience" (FACIL's ``Inc_Learning_Appr.train_loop``): after each epoch the mean
    # per-image ``loss_terms`` sum on ``val_indices`` (model in eval mode, no augmentation);
    # ``patience`` epochs in a row without a new best divide the lr by ``1 / lr_gamma``, and
    # training stops once the lr would fall below ``lr_min``. ``milestones`` are unused.
    patience: int = 5
    lr_min: float = 1e-4
    val_indices: np.ndarray | None = None
    # Replaces the image pipeline: called once per epoch with the run's generator, it yields
    # ``(inputs, labels)`` batches (GVAlign's classifier alignment on sampled features);
    # ``indices`` and ``balanced`` are then unused.
    batches: Callable[[torch.Generator], Iterable[tuple[torch.Tensor, torch.Tensor]]] | None = None


def configured_phase(config: RunConfig, **fields: Any) -> Phase:
    """A :class:`Phase` whose optimiser settings the run's ``config`` fills where ``fields``
    leave them out or give as None (``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
    ``lr_gamma``; no ``milestones``): the one place the main phase and every extra stage take
    them from. Any other field given as None keeps :class:`Phase`'s default."""
    defaults: dict[str, Any] = {
        "lr": config.lr,
        "milestones": (),
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size,
        "momentum": config.momentum,
        "lr_gamma": config.lr_gamma,
    }
    return Phase(**{**defaults, **{k: v for k, v in fields.items() if v is not None}})


class _Patience:
    """FACIL's patience rule, transcribed: a better validation loss resets the count; ``patience``
    epochs without one divide the lr by ``1 / lr_gamma`` (FACIL's ``lr_factor``), or stop the
    phase when the new lr is below ``lr_min``."""

    def __init__(self, phase: Phase) -> None:
        self.lr = phase.lr
        self.factor = 1.0 / phase.lr_gamma
        self.lr_min = phase.lr_min
        self.patience = phase.patience
        self.left = phase.patience
        self.best = float("inf")

    def step(self, valid_loss: float, optimizer: torch.optim.Optimizer) -> bool:
        """Apply one epoch's validation loss; True: stop training."""
        if valid_loss < self.best:
            self.best = valid_loss
            self.left = self.patience
            return False
        self.left -= 1
        if self.left > 0:
            return False
        self.lr /= self.factor
        if self.lr < self.lr_min:
            return True
        self.left = self.patience
        for group in optimizer.param_groups:
            group["lr"] = self.lr
        return False


def backward_split(
    head: nn.Module,
    step: Step,
    terms: dict[str, torch.Tensor],
    classifier_gradient: Callable[[Step, dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Back-propagate through the logits once, then let the method set the classifier's gradient.

    Each loss term's gradient w.r.t. the logits is taken separately (cheap: it stops at
    the logits); their sum goes back through the network in one backward pass, which
    equals ``sum(terms).backward()`` because such terms depend on the model only through
    the logits. The classifier's weight/bias gradients are then replaced by the method's.
    """
    logits = step.out["logits"]
    grads = {}
    for name, term in terms.items():
        (g,) = torch.autograd.grad(term, logits, retain_graph=True, allow_unused=True)
        grads[name] = torch.zeros_like(logits) if g is None else g
    logits.backward(sum(grads.values()))
    weight_grad, bias_grad = classifier_gradient(step, grads)
    head.weight.grad = weight_grad.to(head.weight.dtype)
    head.bias.grad = bias_grad.to(head.bias.dtype)


class Learner:
    """Trains and evaluates one class-incremental run; resumes from task checkpoints."""

    def __init__(
        self,
        *,
        config: RunConfig,
        dataset: LoadedDataset,
        scenario: Scenario,
        pipeline: Any,
        device: torch.device,
        out_dir: Path | None,
        method_cls: type,
        report: Callable[[dict[str, Any]], None] | None = None,
        fingerprint: str = "",
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.scenario = scenario
        self.pipeline = pipeline
        self.device = device
        self.out_dir = Path(out_dir) if out_dir else None
        self.report = report
        self.fingerprint = fingerprint
        self.train_labels = scenario.label_map[dataset.train.labels]
        self.test_labels = scenario.label_map[dataset.test.labels]
        self.memory = ExemplarMemory(config.memory_per_class)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.method = method_cls(learner=self, options=config.method_options())
        in_channels = int(dataset.train.images.shape[1]) if dataset.train.images is not None else 3
        backbone = get_backbone(self.method.backbone_name(config.backbone))(in_channels=in_channels, **self.method.backbone_kwargs())
        self.model = IncrementalNet(backbone, self.method.make_head(backbone.feature_dim)).to(device)
        self.execution = resolve_execution(config, device)
        if self.execution.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher: nn.Module | None = None
        self.rows: list[dict[str, Any]] = []  # per finished task: metrics
        self.current: TaskContext | None = None
        self._log_file = None

    # -- the task loop ----------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        start_task = self._restore()
        for task in range(start_task, self.scenario.num_tasks):
            t0 = time.perf_counter()
            ctx = self._begin_task(task)
            indices = self.method.train_indices(ctx)
            ctx.train_counts = np.bincount(self.train_labels[indices], minlength=ctx.n_seen)[: ctx.n_seen]
            self.method.before_task(ctx)
            if not self.method.skips_main_phase(ctx):
                self.run_phase(self.main_phase(ctx, indices))
            self.method.after_main_phase(ctx)
            if self.method.uses_memory and self.config.memory_per_class > 0:
                self._update_memory(ctx)
            self.method.after_train(ctx)
            row = self.evaluate(ctx)
            self.method.after_task(ctx)
            if self.method.needs_teacher:
                self.teacher = self._frozen_copy()
            row["task_wall_s"] = time.perf_counter() - t0
            self.rows.append(row)
            if self.config.checkpoint and self.out_dir is not None:
                save_checkpoint(self.out_dir, task, self._state(task))
            self._report(task, restored=False)
        return self.rows

    def _begin_task(self, task: int) -> TaskContext:
        n_old = sum(len(c) for c in self.scenario.task_classes[:task])
        n_seen = n_old + len(self.scenario.task_classes[task])
        grow = n_seen - self.model.head.num_classes
        if grow > 0:
            self.model.head.grow(grow)
            self.model.head.to(self.device)
        counts = np.bincount(self.train_labels[np.concatenate(self.scenario.train_indices[: task + 1])], minlength=n_seen)
        ctx = TaskContext(
            task=task,
            num_tasks=self.scenario.num_tasks,
            n_old=n_old,
            n_seen=n_seen,
            new_indices=np.asarray(self.scenario.train_indices[task], dtype=np.int64),
            memory_indices=self.memory.indices(),
            class_counts=counts[:n_seen],
        )
        self.current = ctx
        return ctx

    def main_phase(self, ctx: TaskContext, indices: np.ndarray) -> Phase:
        cfg = self.config
        engine_forward = self._training_forward()
        forward = self.method.main_forward(engine_forward)
        phase = configured_phase(
            cfg,
            name="train",
            indices=indices,
            epochs=cfg.epochs,
            milestones=tuple(cfg.lr_milestones),
            param_groups=self.method.optimizer_params(ctx),
            loss_terms=self.method.loss_terms,
            split_classifier_gradient=self.method.splits_classifier_gradient,
            classifier_gradient=self.method.classifier_gradient if self.method.splits_classifier_gradient else None,
            forward=None if forward is engine_forward else forward,
        )
        return self.method.configure_main_phase(ctx, phase)

    # -- training -----------------------------------------------------------------------
    def run_phase(self, phase: Phase) -> None:
        """Train ``phase.epochs`` epochs of SGD with the phase's schedule (METHOD.md)."""
        if phase.epochs <= 0 or (phase.batches is None and len(phase.indices) == 0):
            return
        optimizer = torch.optim.SGD(
            phase.param_groups, lr=phase.lr, momentum=phase.momentum, weight_decay=phase.weight_decay
        )
        patience = _Patience(phase) if phase.schedule == "patience" else None
        if phase.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=phase.epochs)
        elif phase.schedule == "step":
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(phase.milestones), gamma=phase.lr_gamma)
        elif phase.schedule == "lambda" and phase.lr_lambdas is not None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=list(phase.lr_lambdas))
        elif patience is not None:
            scheduler = None
        else:
            raise ValueError(
                f"Phase {phase.name!r}: schedule must be 'step', 'cosine', 'lambda' (with lr_lambdas) or "
                f"'patience', got {phase.schedule!r}"
            )
        params = [p for group in phase.param_groups for p in group["params"]]
        ctx = self.current
        assert ctx is not None
        for epoch in range(phase.epochs):
            t0 = time.perf_counter()
            sums = self._train_epoch(phase, ctx, optimizer, params)
            lr = optimizer.param_groups[0]["lr"]
            stop = False
            if scheduler is not None:
                scheduler.step()
            else:
                assert patience is not None
                stop = patience.step(self.validation_loss(phase, ctx), optimizer)
            n = sums.pop("_n")
            correct = sums.pop("_correct")
            batches = max(1, sums.pop("_batches"))
            losses = {k: v / batches for k, v in sums.items()}
            if not all(np.isfinite(v) for v in losses.values()):
                raise TrainingDiverged(
                    f"loss became non-finite ({losses}) in task {ctx.task}, phase {phase.name}, epoch {epoch}; "
                    "lower the learning rate or check the data"
                )
            self._log(
                {
                    "task": ctx.task,
                    "phase": phase.name,
                    "epoch": epoch,
                    "lr": lr,
                    "loss": losses,
                    "train_acc": 100.0 * correct / max(1, n),
                    "images": int(n),
                    "wall_s": time.perf_counter() - t0,
                }
            )
            if stop:
                break

    def validation_loss(self, phase: Phase, ctx: TaskContext) -> float:
        """Mean per-image ``phase.loss_terms`` sum over ``phase.val_indices``: model in eval
        mode, no augmentation, the teacher's outputs as in training (FACIL's ``eval`` loss)."""
        indices = phase.val_indices if phase.val_indices is not None else np.zeros(0, dtype=np.int64)
        forward = phase.forward or self.model
        self.model.eval()
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        n = 0
        with torch.no_grad():
            for x, y in self.pipeline.eval_batches(indices, "train", self.config.eval_batch_size):
                with self._autocast():
                    out = forward(x)
                    teacher_out = self.teacher(x) if self.teacher is not None and phase.use_teacher else None
                step = Step(x=x, y=y, out=out, teacher_out=teacher_out, ctx=ctx, phase=phase)
                total += sum(phase.loss_terms(step).values()).double() * len(y)
                n += len(y)
        return float(total) / n if n else float("inf")

    def _train_epoch(self, phase: Phase, ctx: TaskContext, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> dict[str, float]:
        self.model.train(phase.train_mode)
        forward = phase.forward or self._training_forward()
        if phase.batches is not None:
            source = phase.batches(self.generator)
        elif phase.epoch_indices is not None:
            source = self.pipeline.train_batches(phase.epoch_indices(), phase.batch_size, self.generator, shuffle=False)
        else:
            indices = self._balanced_indices(phase.indices) if phase.balanced else phase.indices
            source = self.pipeline.train_batches(indices, phase.batch_size, self.generator)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=self.device)
        batches = 0
        n = 0
        for x, y in source:
            x = self._to_memory_format(x)
            with self._autocast():
                out = forward(x)
                teacher_out = None
                if self.teacher is not None and phase.use_teacher:
                    with torch.no_grad():
                        teacher_out = self.teacher(x)
            step = Step(x=x, y=y, out=out, teacher_out=teacher_out, ctx=ctx, phase=phase)
            terms = phase.loss_terms(step)
            optimizer.zero_grad(set_to_none=True)
            if phase.split_classifier_gradient:
                assert phase.classifier_gradient is not None
                backward_split(self.model.head, step, terms, phase.classifier_gradient)
            else:
                sum(terms.values()).backward()
            if self.config.clip_grad and self.config.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.clip_grad)
            optimizer.step()
            for name, value in terms.items():
                value = value.detach().float()
                sums[name] = sums[name] + value if name in sums else value
            logits = out["logits"]
            correct += (logits.detach().argmax(1) == y).sum()
            batches += 1
            n += len(y)
        result = {k: float(v) for k, v in sums.items()}  # one host sync per epoch
        result["_batches"] = batches
        result["_correct"] = float(correct)
        result["_n"] = n
        return result

    def _training_forward(self) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """The model, or with ``compile`` a ``torch.compile`` wrapper sharing its parameters.

        The wrapper is built once: the module it wraps stays ``self.model`` (checkpoints keep
        their plain keys), and a grown head only triggers one recompilation per task.
        """
        if not self.config.compile:
            return self.model
        if getattr(self, "_compiled", None) is None:
            self._compiled = torch.compile(self.model)
        return self._compiled

    def _balanced_indices(self, indices: np.ndarray) -> np.ndarray:
        """Class-balanced resampling: every class drawn with equal probability, same epoch length."""
        labels = self.train_labels[indices]
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels]
        draws = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), len(indices), replacement=True, generator=self.generator)
        return indices[draws.numpy()]

    def _autocast(self):
        return self.execution.autocast(self.device)

    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if self.execution.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # -- memory, teacher ------------------------------------------------------------------
    def features(
        self, indices: np.ndarray, split: str = "train", flip: bool = False, augment: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (float32) and arrival labels of ``indices``, eval mode, no augmentation
        unless ``augment``.

        ``flip=True``: of the horizontally mirrored images (iCaRL's optional flip-averaged means).
        ``augment=True``: of one training-augmented view of each training image, in shuffled
        order (the view the training batches get; draws from the run's generator).
        """
        self.model.eval()
        feats, labels = [], []
        if augment:
            if split != "train":
                raise ValueError(f"features(augment=True) reads the training split, got split={split!r}")
            batches = self.pipeline.train_batches(indices, self.config.eval_batch_size, self.generator)
        else:
            batches = self.pipeline.eval_batches(indices, split, self.config.eval_batch_size)
        with torch.inference_mode(), self._autocast():
            for x, y in batches:
                if flip:
                    x = x.flip(3)
                x = self._to_memory_format(x)
                feats.append(self.model.backbone(x)["features"].float())
                labels.append(y)
        if not feats:
            return torch.zeros(0, 1, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        return torch.cat(feats), torch.cat(labels)

    def _update_memory(self, ctx: TaskContext) -> None:
        """Herding on the current model's features for the new classes; old exemplars stay."""
        indices = ctx.new_indices
        feats, labels = self.features(indices)
        chosen = herding_select(feats, labels, self.method.exemplars_per_class())
        self.memory.add({c: indices[rows] for c, rows in chosen.items()})

    def _frozen_copy(self) -> nn.Module:
        teacher = copy.deepcopy(self.model)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, ctx: TaskContext) -> dict[str, Any]:
        """Task-agnostic accuracy over all classes seen so far (one head, no task id), on the
        test set, and (``"val"``) on the validation hold-out: see :meth:`evaluate_holdout`."""
        t0 = time.perf_counter()
        n_seen = ctx.n_seen
        indices = np.concatenate(self.scenario.test_indices[: ctx.task + 1])
        correct_np, total_np = self.class_hits(indices, "test", n_seen)
        acc_row = []
        for u in range(ctx.task + 1):
            cls = self.scenario.task_classes[u]
            acc_row.append(float(100.0 * correct_np[cls].sum() / max(1.0, total_np[cls].sum())))
        groups = M.shot_groups(self.scenario.counts_before_val[:n_seen])
        per_class = np.where(total_np > 0, 100.0 * correct_np / np.maximum(total_np, 1), 0.0)
        test_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        val = self.evaluate_holdout(ctx, self.validation_indices(ctx), "train")
        val_s = time.perf_counter() - t0
        row = {
            "task": ctx.task,
            "acc_row": acc_row,
            "acc_seen": float(100.0 * correct_np.sum() / max(1.0, total_np.sum())),
            "shot_acc": M.shot_accuracy(correct_np, total_np, groups),
            "per_class_acc": per_class.tolist(),
            "val": val,
        }
        self._write_log(
            {
                "task": ctx.task, "phase": "eval", "acc_seen": row["acc_seen"], "task_avg_acc": float(np.mean(acc_row)),
                "val_acc_seen": val["acc_seen"], "val_task_avg_acc": M.mean_or_none(val["acc_row"]),
                "val_images": val["images"], "val_classes_without_images": val["classes_without_images"],
                "test_s": test_s, "val_s": val_s,
            }
        )
        return row

    def class_hits(self, indices: np.ndarray, split: str, n_seen: int) -> tuple[np.ndarray, np.ndarray]:
        """Per seen class, correct predictions and images among ``indices`` of ``split``.

        The one prediction path of every evaluation (test and validation): the model in eval
        mode and the method's ``eval_logits`` (BiC's bias layers, the 2-stage scales, iCaRL's
        nearest mean), at the point of the task loop where it is called.
        """
        correct = torch.zeros(n_seen, device=self.device)
        total = torch.zeros(n_seen, device=self.device)
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            for x, y in self.pipeline.eval_batches(indices, split, self.config.eval_batch_size):
                x = self._to_memory_format(x)
                out = self.model(x)
                pred = self.method.eval_logits(out, n_seen).float().argmax(1)
                correct += torch.bincount(y[pred == y], minlength=n_seen)[:n_seen].float()
                total += torch.bincount(y, minlength=n_seen)[:n_seen].float()
        return correct.cpu().numpy(), total.cpu().numpy()

    def validation_indices(self, ctx: TaskContext) -> list[np.ndarray]:
        """Per task seen so far, the hold-out images the validation figures are measured on:
        ``Scenario.val_indices`` less any the method trains on (BiC's bias-correction set),
        so the figures never score a model on images it was fit to."""
        used = self.method.trained_holdout_indices()
        return [np.setdiff1d(idx, used) for idx in self.scenario.val_indices[: ctx.task + 1]]

    def evaluate_holdout(self, ctx: TaskContext, indices_per_task: list[np.ndarray], split: str) -> dict[str, Any]:
        """Class-balanced figures (:func:`cil_core.metrics.validation_row`) on ``indices_per_task``
        of ``split``; with the validation hold-out, the ``"val"`` part of a task's row."""
        indices = np.concatenate([np.asarray(i, dtype=np.int64) for i in indices_per_task[: ctx.task + 1]])
        correct, total = self.class_hits(indices, split, ctx.n_seen)
        return M.validation_row(correct, total, self.scenario.task_classes[: ctx.task + 1])

    # -- reporting, logging ---------------------------------------------------------------
    def _report(self, task: int, restored: bool) -> None:
        if self.report is None:
            return
        rows = self.rows[: task + 1]
        self.report(
            {
                "task": task,
                "num_tasks": self.scenario.num_tasks,
                "acc_seen": rows[-1]["acc_seen"],
                "task_avg_acc": float(np.mean(rows[-1]["acc_row"])),
                "avg_incremental_accuracy_so_far": M.average_incremental_accuracy([r["acc_row"] for r in rows]),
                **self._validation_report(rows),
                "restored": restored,
            }
        )

    def _log(self, record: dict[str, Any]) -> None:
        log.info(
            "task %d %s epoch %d lr %.4g loss %s acc %.1f",
            record["task"], record["phase"], record["epoch"], record["lr"],
            {k: round(v, 4) for k, v in record["loss"].items()}, record["train_acc"],
        )
        self._write_log(record)

    def _write_log(self, record: dict[str, Any]) -> None:
        """One line of ``log.jsonl``: an epoch's record, or a task's ``"phase": "eval"`` one."""
        if self.out_dir is None:
            return
        with open(self.out_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    @staticmethod
    def _validation_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The validation keys of a task's report (``M.VALIDATION_REPORT_KEYS``)."""
        summary = M.summarise_validation([r["val"] for r in rows])
        return {
            "val_acc_seen": summary["val_acc_seen"][-1],
            "val_task_avg_acc": summary["val_task_avg_acc"][-1],
            "val_avg_incremental_accuracy_so_far": summary["val_avg_incremental_accuracy"],
        }

    # -- checkpoints ----------------------------------------------------------------------
    def _state(self, task: int) -> dict[str, Any]:
        return {
            "task": task,
            "config_fingerprint": self.fingerprint,
            "model": self.model.state_dict(),
            "num_classes": self.model.head.num_classes,
            "memory": self.memory.state_dict(),
            "method": self.method.state_dict(),
            "rows": self.rows,
            "rng": {
                "generator": self.generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def _restore(self) -> int:
        """Load the newest valid checkpoint; return the first task still to train."""
        if self.out_dir is None or not self.config.checkpoint:
            return 0
        state = latest_valid_checkpoint(self.out_dir, self.fingerprint)
        if state is None:
            return 0
        if any("val" not in row for row in state["rows"]):
            log.warning("the checkpoints in %s predate the validation figures: the run starts again", self.out_dir)
            return 0
        self.model.head.resize_to(state["num_classes"])
        self.model.to(self.device)
        self.model.load_state_dict(state["model"])
        self.memory.load_state_dict(state["memory"])
        self.method.load_state_dict(state["method"])
        self.rows = list(state["rows"])
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.method.needs_teacher:
            self.teacher = self._frozen_copy()
        log.info("resumed after task %d from %s", state["task"], self.out_dir)
        for task in range(state["task"] + 1):
            self._report(task, restored=True)
        return state["task"] + 1
