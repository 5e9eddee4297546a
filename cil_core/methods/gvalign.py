"""GVAlign (Kalla & Biswas, "Robust Feature Learning and Global Variance-Driven Classifier
Alignment for Long-Tail Class Incremental Learning", WACV 2024, arXiv 2311.01227) on top of
LUCIR and PODNet: ``lucir_gvalign``, ``podnet_gvalign``.

What runs, per task, as the authors' code has it (``src/approach/lucir_gvalign_2stage.py`` and
``podnet_gvalign_2stage.py`` of JAYATEJAK/GVAlign, the code behind the published numbers):

Stage 1, robust feature learning (``train_epoch``): each batch ``x`` gets a mixed copy
``lam * x + (1 - lam) * x[perm]`` (one ``lam ~ Beta(alpha, alpha)`` per batch, ``alpha = 1``,
a random permutation of the batch; ``mixup_data``) and the model runs on both halves at once
(BatchNorm sees them together). The base method's losses are computed as before on the
original half, plus ``mixup_weight * [lam * CE(z_mix, y) + (1 - lam) * CE(z_mix, y[perm])]``
on the mixed half's scaled logits (``mixup_criterion``; ``loss += loss_mix``, weight 1, at every
task). The mixed images take the two labels of their sources: the "mixup classes" of the
abstract are not extra virtual classes in this code (``podnet_gvalign_2stage.py`` defines a
``classAug`` with virtual pair labels but never calls it). Where the base losses see the mixed
half differs between the two files, and is kept: LUCIR's less-forget and margin-ranking terms
use the original images only (``features[:targets.shape[0]]``, ``outputs_wos[:org_bs]``);
PODNet's POD-flat and POD-spatial use all of them, originals and mixed, with the previous
model run on the mixed images too (``criterion`` slices only the classifier's outputs).

Stage 2, global-variance-driven classifier alignment (``train_loop`` after the exemplar
update, ``protosave`` and ``classifier_tune``), after every task including the first:
the task's training set (new images plus the exemplars kept before this task) goes through the
frozen model in eval mode; each class's prototype is the mean of its L2-normalised features
(not re-normalised). The "global variance" is one covariance matrix shared by every class:
the unbiased covariance (``torch.cov``) of the normalised features of the class with the most
training images *in the first task*, computed once with the first task's model and reused,
unchanged, at every later task (``if t==0: self.cov_cls_ms_major = self.cov_list[argmax]``).
Each alignment step draws one pseudo-feature per seen class from ``N(prototype_c, Sigma)``
and takes one SGD step of cross-entropy over all seen classes on the classifier alone (old and
new rows and the scale ``sigma``; the backbone and its BatchNorm statistics frozen): 100
steps, lr 0.1 (hard-coded), the run's momentum, weight decay and gradient clipping. The
aligned classifier is the one evaluated and the one the next task's teacher keeps.

Defaults, where from: ``mixup_alpha = 1`` (``mixup_data(x, y, alpha=1.0)``), ``mixup_weight =
1`` (``loss += loss_mix``), ``align_steps = 100`` (``for e in range(100)``), one sample per
class per step (``distrib.rsample()`` on a batch of per-class Gaussians), ``align_lr = 0.1``
(``lr = 0.1``), ``align_milestones = ()``: the code divides that lr by ``lr_factor`` when
``e + 1`` is in the main phase's ``schedule_step``, which for its CIFAR-100 script (steps 250,
350, 450) never happens within 100 steps; its ImageNet-Subset script (steps 30, 60) drops it at
steps 30 and 60 (``--set lucir_gvalign.align_milestones=30,60`` reproduces that).

Where this module departs from that code:

- The main phase's schedule is the run's (CIFAR-100: 160 epochs, steps at 80 and 120, as every
  other approach of the benchmark), not the authors' script's 500 epochs with steps at 250,
  350 and 450 (``--epochs 500 --set lr_milestones=250,350,450`` for that).
- The pseudo-features are drawn through an eigendecomposition of the covariance (negative
  eigenvalues from round-off clipped to 0) instead of ``MultivariateNormal``'s Cholesky
  factor: the same distribution, but a singular covariance (a head class with fewer images
  than feature dimensions) samples instead of raising. A head class with one image gives a
  zero covariance (``torch.cov`` gives NaN there). Only classes with training images are
  sampled (the code assumes every seen class has some).
- The prototypes come from one augmented view of each training image, as in the code (its
  ``trn_loader`` carries the training transforms), drawn with this run's generator;
  ``prototype_augment=false`` uses the un-augmented images instead.
- The random numbers come from the run's seeded generators: ``lam`` from the global NumPy
  generator as in the code, the permutation and the pseudo-features from the run's torch
  generator; both are in the task checkpoints.

The paper's own method section could not be read for this project (only its abstract and
introduction were available), so nothing here follows the paper text against the code. The
repository's ``lucir_proto_aug.py`` (per-class covariances, a count-dependent radius, a
hard-coded checkpoint path) is an exploration that no script runs, not the published method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .. import losses
from ._building_blocks import register_variant
from .base import Method
from .lucir import LUCIR
from .podnet import PODNet
from ..approach_options import GVAlignOptions


# -- the statistics and the sampler --------------------------------------------------------
def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mean of the L2-normalised features (not re-normalised: ``protosave``'s
    ``embedding.mean(0)``) and the count. Returns ``(prototypes (C, D), counts (C,))``; a class
    without features gets a zero prototype and count 0."""
    feats = F.normalize(features.float(), dim=1)
    sums = torch.zeros(num_classes, feats.shape[1], device=feats.device).index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    return sums / counts.clamp_min(1)[:, None].to(sums.dtype), counts


def global_covariance(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, int]:
    """GVAlign's global variance: the unbiased covariance (``torch.cov``, divisor n - 1) of the
    L2-normalised features of the class with the most samples (the first such class on a tie,
    as ``torch.argmax``). Returns ``(covariance (D, D), that class)``; a class of one sample
    gives zeros."""
    feats = F.normalize(features.float(), dim=1)
    counts = torch.bincount(labels, minlength=num_classes)[:num_classes]
    head = int(torch.argmax(counts))
    rows = feats[labels == head]
    if rows.shape[0] < 2:
        return torch.zeros(feats.shape[1], feats.shape[1], device=feats.device), head
    return torch.cov(rows.t()), head


def gaussian_factor(covariance: torch.Tensor) -> torch.Tensor:
    """``L`` with ``L @ L.T == covariance`` for a symmetric positive semi-definite matrix
    (eigendecomposition in float64, round-off negative eigenvalues clipped to 0)."""
    cov = covariance.detach().to("cpu", torch.float64)
    cov = (cov + cov.t()) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()).float()


def sample_pseudo_features(
    prototypes: torch.Tensor, factor: torch.Tensor, per_class: int, generator: torch.Generator
) -> torch.Tensor:
    """``per_class`` draws from ``N(prototype_c, L L^T)`` for each row c of ``prototypes``, class
    after class: shape ``(C * per_class, D)``. The standard normals come from ``generator`` (on
    its device, the CPU for the run's) and move to the prototypes' device."""
    n, dim = prototypes.shape
    z = torch.randn(n * per_class, dim, generator=generator, device=generator.device)
    z = z.to(prototypes.device, non_blocking=True)
    return prototypes.float().repeat_interleave(per_class, dim=0) + z @ factor.to(prototypes.device).t()


def _split_batch(value: Any, n: int) -> tuple[Any, Any]:
    """``(first n rows, the rest)`` of a tensor, or of each tensor of a list."""
    if isinstance(value, torch.Tensor):
        return value[:n], value[n:]
    if isinstance(value, (list, tuple)):
        return [v[:n] for v in value], [v[n:] for v in value]
    return value, value


def _join(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    return [torch.cat([x, y]) for x, y in zip(a, b)]


class GVAlignMixin:
    """Adds GVAlign's two stages to LUCIR or PODNet (put it first in the bases)."""

    opts: Any
    # Members of the approach surface (Method's) this mixin uses, for the type checker.
    model: Any
    teacher: Any
    device: Any
    generator: Any
    features: Any
    run_stage: Any
    # PODNet's code distils the mixed images as well; LUCIR's only the original ones.
    distill_mixed: ClassVar[bool] = False

    def __init__(self, *, learner: Any, options: Any) -> None:
        super().__init__(learner=learner, options=options)  # type: ignore[call-arg]
        self.global_cov: torch.Tensor | None = None  # set after the first task, then kept

    # -- stage 1: mixup ------------------------------------------------------------------
    def main_forward(self, forward: Callable[[torch.Tensor], dict[str, Any]]) -> Callable[[torch.Tensor], dict[str, Any]]:
        forward = super().main_forward(forward)  # type: ignore[misc]
        if self.opts.mixup_weight <= 0:
            return forward

        def mixed_forward(x: torch.Tensor) -> dict[str, Any]:
            n = x.shape[0]
            alpha = self.opts.mixup_alpha
            lam = float(np.random.beta(alpha, alpha)) if alpha > 0 else 1.0
            perm = torch.randperm(n, generator=self.generator).to(x.device, non_blocking=True)
            mixed = lam * x + (1.0 - lam) * x[perm]
            both = dict(forward(torch.cat([x, mixed])))
            out: dict[str, Any] = {}
            mix: dict[str, Any] = {}
            for key, value in both.items():
                out[key], mix[key] = _split_batch(value, n)
            teacher = self.teacher
            if self.distill_mixed and teacher is not None:
                with torch.no_grad():
                    mix["teacher"] = teacher(mixed)
            out["mixup"] = {"out": mix, "perm": perm, "lam": lam}
            return out

        return mixed_forward

    def loss_terms(self, step: Any) -> dict[str, torch.Tensor]:
        mixup = step.out.get("mixup")
        if mixup is None:  # extra stages (LUCIR's class-balanced fine-tuning) see no mixed half
            return super().loss_terms(step)  # type: ignore[misc]
        terms = dict(super().loss_terms(self._base_step(step, mixup)))  # type: ignore[misc]
        logits = mixup["out"]["logits"][:, : step.ctx.n_seen]
        terms["mixup"] = self.opts.mixup_weight * losses.mixup_cross_entropy(
            logits, step.y, step.y[mixup["perm"]], mixup["lam"]
        )
        return terms

    def _base_step(self, step: Any, mixup: dict[str, Any]) -> Any:
        """The step the base method's losses see: the original half, or (PODNet) its features
        and maps extended by the mixed half's, the teacher's likewise; the logits stay the
        original half's (the classification loss is on the original images only)."""
        mix = mixup["out"]
        if not self.distill_mixed or step.teacher_out is None or "teacher" not in mix:
            return step
        out = {k: v for k, v in step.out.items() if k != "mixup"}
        teacher_out = dict(step.teacher_out)
        for key in ("features", "maps"):
            if key in out and key in mix and key in teacher_out and key in mix["teacher"]:
                out[key] = _join(out[key], mix[key])
                teacher_out[key] = _join(teacher_out[key], mix["teacher"][key])
        return dataclasses.replace(step, out=out, teacher_out=teacher_out)

    # -- stage 2: classifier alignment ---------------------------------------------------
    def after_train(self, ctx: Any) -> None:
        super().after_train(ctx)  # type: ignore[misc]
        self.align_classifier(ctx)

    def align_classifier(self, ctx: Any) -> None:
        opts = self.opts
        indices = self.train_indices(ctx)
        if opts.align_steps <= 0 or len(indices) == 0:
            return
        feats, labels = self.features(indices, augment=opts.prototype_augment)
        labels = labels.long()
        prototypes, counts = class_prototypes(feats, labels, ctx.n_seen)
        if ctx.task == 0 or self.global_cov is None:
            self.global_cov, _ = global_covariance(feats, labels, ctx.n_seen)
        factor = gaussian_factor(self.global_cov).to(self.device)
        classes = torch.nonzero(counts > 0).flatten()
        means = prototypes[classes]
        targets = classes.repeat_interleave(opts.align_samples_per_class)
        per_class = opts.align_samples_per_class

        def batches(generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            yield sample_pseudo_features(means, factor, per_class, generator), targets

        head = self.model.head
        n_seen = ctx.n_seen

        def forward(features: torch.Tensor) -> dict[str, Any]:
            return {"logits": head(features)[:, :n_seen], "features": features}

        def terms(step: Any) -> dict[str, torch.Tensor]:
            return {"align_ce": F.cross_entropy(step.out["logits"].float(), step.y)}

        params = [p for p in (head.weight_old, head.weight_new, head.sigma) if p.numel() > 0]
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            self.run_stage(
                "classifier_alignment",
                indices=np.zeros(0, dtype=np.int64),
                epochs=opts.align_steps,
                param_groups=[{"params": params}],
                loss_terms=terms,
                lr=opts.align_lr,
                milestones=opts.align_milestones,
                batch_size=len(targets),
                forward=forward,
                train_mode=False,
                use_teacher=False,
                batches=batches,
            )
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = dict(super().state_dict())  # type: ignore[misc]
        state["global_cov"] = None if self.global_cov is None else self.global_cov.detach().cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # type: ignore[misc]
        cov = state.get("global_cov")
        self.global_cov = None if cov is None else cov.to(self.device)


def gvalign(base: type[Method], *, distill_mixed: bool) -> type[Method]:
    """``<base>_gvalign``: ``base`` with GVAlign's two stages, its options plus :class:`GVAlignOptions`."""
    return register_variant(
        base, GVAlignMixin, GVAlignOptions, suffix="gvalign", class_suffix="GVAlign", module=__name__,
        summary=f"{base.name} + GVAlign (Kalla & Biswas 2024): mixup in stage 1, classifier aligned on "
        "prototype + global-covariance pseudo-features",
        distill_mixed=distill_mixed,
    )


LUCIRGVAlign = gvalign(LUCIR, distill_mixed=False)
PODNetGVAlign = gvalign(PODNet, distill_mixed=True)
