"""The base class every approach extends, and the hooks the engine calls.

The :class:`~cil_core.engine.learner.Learner` owns the task loop, the epochs, the
optimiser, evaluation, memory and checkpoints. For each task ``t`` it calls, in order:

1. ``train_indices(ctx)``     which training images the main phase uses (default: the new
                              classes' images plus the exemplar memory); the engine then
                              fills ``ctx.train_counts`` (images per class in that set).
2. ``before_task(ctx)``       after the head has grown for the new classes.
3. the main phase (unless ``skips_main_phase(ctx)``): for each batch ``loss_terms(step)`` returns named scalar losses; the
   engine sums them and back-propagates. ``main_forward(forward)`` may wrap the model's
   training forward for this phase (GVAlign's mixup runs the model on the batch plus its
   mixed copy); the wrapper's ``"logits"`` keep one row per input image. A method that sets
   ``splits_classifier_gradient = True`` also gets ``classifier_gradient(step, logit_grads)``
   with each term's gradient w.r.t. the logits, and returns the classifier's weight and bias
   gradients, which replace the plain ones (DGR). ``configure_main_phase(ctx, phase)`` may
   change the main phase's schedule or parameter groups (iCaRL's patience rule, joint's lr
   rule).
4. ``after_main_phase(ctx)``  extra stages that precede the exemplar selection (EEIL's
                              balanced fine-tuning) through ``self.run_stage(...)``.
5. memory update              herding on the new classes (if ``uses_memory``), keeping
                              ``exemplars_per_class()`` of each (BiC: 18 of 20).
6. ``after_train(ctx)``       extra stages after it (BiC's bias fit, the 2-stage recipe).
7. evaluation with ``eval_logits(out)`` (default: the raw logits over seen classes).
8. ``after_task(ctx)``        bookkeeping; then the engine freezes a copy of the model as the
                              teacher for the next task (if ``needs_teacher``) and saves the
                              task checkpoint, which includes ``state_dict()``.

The approach surface: an approach sees the run only through the members of :class:`Method`
below (``model``, ``teacher``, ``device``, ``config``, ``scenario``, ``dataset``, ``memory``,
``train_labels``, ``generator``, ``features(...)``, ``run_stage(...)``), each documented with
why an approach needs it; it never reaches into the Learner (``tests/methods/test_surface.py``
checks that). An extra stage is one ``run_stage`` call: the run's optimiser settings fill
whatever the stage does not set.

Options: each approach declares a frozen ``Options`` dataclass whose defaults cite the
paper; users override them with ``--set APPROACH.KEY=VALUE``. The base class never reads
``sys.argv`` or mutates the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ..approach_options import NoOptions
from ..engine.network import LinearHead

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..data.contract import LoadedDataset, Scenario
    from ..engine.learner import Learner, Phase, Step, TaskContext
    from ..engine.network import IncrementalNet
    from ..memory import ExemplarMemory


class Method:
    name: ClassVar[str] = "base"
    Options: ClassVar[type] = NoOptions
    uses_memory: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = False
    splits_classifier_gradient: ClassVar[bool] = False
    # One line for the README's method table and ``--list``.
    summary: ClassVar[str] = ""

    def __init__(self, *, learner: "Learner", options: Any) -> None:
        self._learner = learner  # private: approaches use the documented members below
        self.opts = options

    # -- the approach surface: everything of the run an approach may use ----------------------
    @property
    def model(self) -> "IncrementalNet":
        """The network being trained (``backbone`` + ``head``): parameter groups, head rows to
        freeze, imprint or rescale, frozen copies for a stage."""
        return self._learner.model

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen model of the previous task (None at the first task, or without
        ``needs_teacher``): distillation outside ``step.teacher_out`` (GVAlign's mixed images)."""
        return getattr(self._learner, "teacher", None)

    @property
    def device(self) -> torch.device:
        """Where the model lives: tensors an approach creates (bias layers, scales, means)."""
        return self._learner.device

    @property
    def config(self) -> "RunConfig":
        """The run's resolved config (read-only): the memory budget, the main phase's epochs,
        lr and optimiser settings a stage scales or reuses."""
        return self._learner.config

    @property
    def scenario(self) -> "Scenario":
        """The class-incremental split: ``task_classes``, ``train_indices`` per task (joint
        trains on all seen tasks) and the validation hold-out ``val_indices`` (iCaRL's patience
        rule, BiC's hold-out bias set)."""
        return self._learner.scenario

    @property
    def dataset(self) -> "LoadedDataset":
        """The loaded data set: data-set-dependent defaults (LUCIR's ``lamb_base``) and the
        input channels of a freshly built backbone (joint's re-initialisation)."""
        return self._learner.dataset

    @property
    def memory(self) -> "ExemplarMemory":
        """The exemplar memory (``indices()``): the stages that train on exemplars only."""
        return self._learner.memory

    @property
    def train_labels(self) -> np.ndarray:
        """Arrival-order label of every training image (by training-split index): choosing
        images per class (BiC's validation split, the class-aware sampler)."""
        return self._learner.train_labels

    @property
    def generator(self) -> torch.Generator:
        """The run's random generator: every draw an approach makes comes from it, in order, so
        a resumed run repeats an uninterrupted one."""
        return self._learner.generator

    def features(self, indices: np.ndarray, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (float32) and labels of ``indices`` under the current model, eval mode:
        class means, imprinting, prototypes. ``options``: ``split``, ``flip``, ``augment`` of
        :meth:`~cil_core.engine.learner.Learner.features`."""
        return self._learner.features(indices, **options)

    def run_stage(
        self,
        name: str,
        *,
        indices: np.ndarray,
        epochs: int,
        param_groups: list[dict[str, Any]],
        loss_terms: Callable[["Step"], dict[str, torch.Tensor]],
        **settings: Any,
    ) -> None:
        """Train one extra stage through the engine (epochs, batches, optimiser, schedule).

        ``settings`` are any other :class:`~cil_core.engine.learner.Phase` fields; the
        optimiser settings it leaves out or gives as None (``lr``, ``momentum``,
        ``weight_decay``, ``batch_size``, ``lr_gamma``) are the run's config's, and
        ``milestones`` default to none (a stage's length differs from the main phase's)."""
        from ..engine.learner import configured_phase

        self._learner.run_phase(
            configured_phase(
                self.config, name=name, indices=indices, epochs=epochs, param_groups=param_groups,
                loss_terms=loss_terms, **settings,
            )
        )

    # -- model construction -------------------------------------------------------
    def backbone_kwargs(self) -> dict[str, Any]:
        return {}

    def backbone_name(self, configured: str) -> str:
        """The registered backbone this approach builds for the run's ``configured`` one
        (PODNet swaps in its reference code's variant)."""
        return configured

    def make_head(self, in_features: int) -> nn.Module:
        return LinearHead(in_features)

    # -- task hooks ---------------------------------------------------------------
    def before_task(self, ctx: "TaskContext") -> None:
        pass

    def skips_main_phase(self, ctx: "TaskContext") -> bool:
        """True: the engine runs no main phase for this task (LUCIR-2stage's reference skips
        stage 1 on tasks with few images per class); the later hooks still run."""
        return False

    def train_indices(self, ctx: "TaskContext") -> np.ndarray:
        return np.concatenate([ctx.new_indices, ctx.memory_indices]).astype(np.int64)

    def main_forward(self, forward: Callable[[torch.Tensor], dict[str, Any]]) -> Callable[[torch.Tensor], dict[str, Any]]:
        """The main phase's ``batch -> output dict``, given the engine's (the model, or its
        ``torch.compile`` wrapper). Default: ``forward`` itself. A wrapper must return
        ``"logits"`` with one row per input image (the labels and the accuracy are per image);
        anything else it adds reaches ``loss_terms`` in ``step.out``."""
        return forward

    def configure_main_phase(self, ctx: "TaskContext", phase: "Phase") -> "Phase":
        """The main phase the engine built from the run's config; return it changed (e.g. by
        ``dataclasses.replace``) where the approach's reference trains differently."""
        return phase

    def optimizer_params(self, ctx: "TaskContext") -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def loss_terms(self, step: "Step") -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def classifier_gradient(self, step: "Step", logit_grads: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def after_main_phase(self, ctx: "TaskContext") -> None:
        pass

    def exemplars_per_class(self) -> int:
        """How many exemplars herding keeps of each new class (the run's ``memory_per_class``)."""
        return int(self.config.memory_per_class)

    def after_train(self, ctx: "TaskContext") -> None:
        pass

    def after_task(self, ctx: "TaskContext") -> None:
        pass

    def eval_logits(self, out: dict[str, torch.Tensor], num_seen: int) -> torch.Tensor:
        return out["logits"][:, :num_seen]

    def trained_holdout_indices(self) -> np.ndarray:
        """Training-split indices of the validation hold-out (``Scenario.val_indices``) that
        this method fits anything on; the run's validation figures leave them out. None here."""
        return np.zeros(0, dtype=np.int64)

    # -- persistence ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
