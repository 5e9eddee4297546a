"""Every approach's options: frozen dataclasses whose defaults cite the paper (no torch here).

They live apart from the approaches (``cil_core/methods``, which need torch) so that a config
is resolved and checked without torch: the orchestrator's driver resolves every trial's config
up front. Each approach module binds its ``Options`` from here; :data:`APPROACH_OPTIONS` maps
every registered approach name (wrapper variants included) to its class, and a test checks it
against the method registry.

A default that depends on the data set (LUCIR's ``lamb_base``) is written ``None`` here and
filled by the class's ``resolve_defaults(dataset, approach)``, which
:func:`cil_core.config.resolve_config` calls, so ``config.json`` records the value that ran.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .ranges import at_least, one_of, positive, ranged


@dataclass(frozen=True)
class NoOptions:
    """An approach without options of its own."""


@dataclass(frozen=True)
class BiCOptions:
    # Sec. 6.2: "The temperature scalar T in Eq. 1 is set to 2 by following [13,2]."
    temperature: float = positive(2.0)
    # Sec. 3: lambda = n / (n + m) for n old and m new classes (None); a number x instead gives
    # CE + x * KD (FACIL's ``--lamb``).
    lamb: float | None = at_least(0, None)
    # Sec. 6.1: "the ratio of train/validation split on the exemplars is 9:1": FACIL's
    # ``--val-exemplar-percentage`` 0.1, ceil(0.1 x 20) = 2 validation images per class.
    val_fraction: float = ranged(0.1, low=0, high=1, high_open=True)
    # "train": cut out of the new classes' training data (the reference); "holdout": from the
    # task's hold-out (``Scenario.val_indices``).
    val_source: str = one_of("train", "holdout")
    # The reference code trains the bias layer epochs_per_eval=100 x epoch_val_times=2 = 200
    # epochs (FACIL's ``--num-bias-epochs``), SGD with momentum 0.9, no weight decay.
    bias_epochs: int = at_least(0, 200)
    # Bias-layer learning rate; None: the run's lr (FACIL: ``SGD(lr=self.lr, momentum=0.9)``).
    bias_lr: float | None = positive(None)
    # The reference code adds 0.1 * beta^2 / 2 to the bias-correction loss.
    beta_l2: float = at_least(0, 0.1)


@dataclass(frozen=True)
class DGROptions:
    # Ablation switches (METHOD.md: "Ablations worth exposing").
    dakd: bool = True  # False: plain KD on the old logits instead of DAKD
    inter_phase: bool = True  # False: r_old = r_new = 1
    intra_phase: bool = True  # False: alpha_c = 1
    attenuation: bool = True  # False: gamma = 1
    logit_adjust: bool = True  # False: plain CE instead of CE(z + log pi)
    # "T = 2" and "beta = 0.7 * sqrt(N_seen / N_new)" (METHOD.md 2.4); ``kd_base`` is the 0.7,
    # the loss-balance constant a search may tune.
    temperature: float = positive(2.0)
    kd_base: float = at_least(0, 0.7)


@dataclass(frozen=True)
class EEILOptions:
    # EEIL p. 6: "Based on our empirical results, we set T to 2 for all our experiments".
    temperature: float = positive(2.0)
    # FACIL's ``--lamb`` default 1 (Eq. 1 adds the terms unweighted).
    lamb: float = at_least(0, 1.0)
    # "bce": FACIL's F.binary_cross_entropy(softmax(s/T), softmax(t/T)) per old layer;
    # "soft_ce": the paper's soft cross-entropy, summed over classes.
    distillation: str = one_of("bce", "soft_ce")
    # The reference distils the last old layer only during balanced fine-tuning.
    main_kd_last_old_head: bool = False
    # None: the reference's 40 epochs scaled to this run (40 x epochs / 160, at least 1).
    finetune_epochs: int | None = at_least(0, None)
    # FACIL's ``--lr-finetuning-factor`` default 0.01, constant (no step inside the stage).
    finetune_lr_factor: float = positive(0.01)
    # The paper's temporary distillation on the new classes' layer during fine-tuning (the
    # reference has none).
    finetune_new_kd: bool = False


@dataclass(frozen=True)
class ICaRLOptions:
    # Alg. 1 "iCaRL classify": nearest-mean-of-exemplars; "cnn" reports the network's outputs.
    classifier: str = one_of("nme", "cnn")
    # "reference": LT-CIL/FACIL's CE + lamb * sum of sigmoid BCEs on the old classes;
    # "paper": Alg. 3's sigmoid BCE over every seen class.
    loss: str = one_of("reference", "paper")
    # FACIL's ``--lamb`` default 1 ("original formulation has no trade-off parameter").
    lamb: float = at_least(0, 1.0)
    # "patience": FACIL's rule (the reference's iCaRL ``train_loop``); "step": the run's milestones.
    schedule: str = one_of("patience", "step")
    # FACIL's ``--lr-patience`` and ``--lr-min`` defaults (the LT-CIL script keeps both).
    lr_patience: int = at_least(1, 5)
    lr_min: float = at_least(0, 1e-4)
    # Class means over each exemplar and its mirror image (the original Theano code); FACIL uses the test
    # transform only.
    flip_means: bool = False


@dataclass(frozen=True)
class JointOptions:
    # LT-CIL/FACIL's joint keeps training the same model; True: fresh weights each task.
    reinit: bool = False
    # "reference": the reference code's per-group rule (``methods/joint.py``); "step": the run's schedule.
    lr_rule: str = one_of("reference", "step")


@dataclass(frozen=True)
class LwFOptions:
    # LwF: the knowledge-distillation loss uses temperature T = 2, as Hinton et al. recommend.
    temperature: float = positive(2.0)
    # LwF: the loss-balance weight lambda_o is 1 in most of its experiments (FACIL: --lamb 1).
    lamb: float = at_least(0, 1.0)
    # The LT-CIL comparison gives every method 20 exemplars per class; the paper has none.
    exemplars: bool = True


@dataclass(frozen=True)
class PODNetOptions:
    # Reference config ``podnet_cnn_cifar100.yaml``: ``proxy_per_class: 10`` (the paper's K = 10).
    proxies: int = at_least(1, 10)
    # The paper's NCA margin (reference config ``nca: margin: 0.6``), used by
    # ``classifier_loss="nca"`` only.
    nca_margin: float = at_least(0, 0.6)
    # Reference config: ``pod_spatial: scheduled_factor: 3.0`` and ``pod_flat: scheduled_factor: 1.0``
    # (each multiplied by sqrt(n_seen / n_new)).
    pod_spatial: float = at_least(0, 3.0)
    pod_flat: float = at_least(0, 1.0)
    # "ce": softmax cross-entropy on the scaled similarities, what the LT-CIL code computes (its
    # ``nca`` call subtracts the margin from every class); "nca": the paper's LSC loss.
    classifier_loss: str = one_of("ce", "nca")
    # Reference config ``groupwise_factors: old_weights: 0.``: old classes' proxies do not learn.
    freeze_old: bool = True
    # The LT-CIL code's PODNet backbones (``main_incremental.py``: ``args.network + '_podnet'``);
    # false: the run's plain backbone (ReLU after each block, 1x1-conv shortcuts).
    reference_backbone: bool = True


@dataclass(frozen=True)
class LUCIROptions:
    # None: the LT-CIL code's value, see ``reference_lamb_base`` (5, except LUCIR-2stage on the
    # ImageNet family: 10). The paper's Sec. 4.1 says "5 for CIFAR100 and 10 for ImageNet".
    lamb_base: float | None = positive(None)
    # Eq. 7: lambda = lambda_base * sqrt(|C_old| / |C_new|).
    adaptive_lambda: bool = True
    # Sec. 4.1: "K is set to 2" (hard negatives among the new classes).
    K: int = at_least(1, 2)
    # Sec. 4.1: "m is set to 0.5 for all experiments".
    margin: float = at_least(0, 0.5)
    # The weight of the margin ranking loss, 1 in the official code (``--lw_mr 1``).
    lamb_mr: float = at_least(0, 1.0)
    # Ablation switches (the LT-CIL code's --remove-less-forget / --remove-margin-ranking).
    less_forget: bool = True
    margin_ranking: bool = True
    # The official code's ``--imprint_weights`` (new rows = normalised class-mean features,
    # scaled to the old rows' mean norm); off in the LT-CIL benchmark's LUCIR.
    imprint: bool = False
    # Class-balanced fine-tuning (official ``cbf_`` script: ``--cb_finetune --ft_epochs 20
    # --ft_base_lr 0.01 --ft_lr_strat 10``, ``ft_flag 2``: old and new weights learn, the feature
    # extractor and its BatchNorm statistics stay fixed). 0: off, as in the LT-CIL benchmark.
    cbf_epochs: int = at_least(0, 0)
    cbf_lr: float = positive(0.01)

    def resolve_defaults(self, dataset: Any, approach: str) -> "LUCIROptions":
        """``lamb_base`` None -> the reference code's value for this approach and data set."""
        if self.lamb_base is not None:
            return self
        family = getattr(dataset, "augment_family", "cifar")
        return dataclasses.replace(self, lamb_base=reference_lamb_base(approach, family))


def reference_lamb_base(approach: str, augment_family: str) -> float:
    """lambda_base as the code behind the published numbers sets it: LT-CIL's ``lucir.py`` takes
    ``--lamb`` (default 5) on every data set, and so does GVAlign's ``lucir_gvalign_2stage.py``;
    LT-CIL's ``lucir_2stage.py`` ignores ``--lamb`` and uses 10 under the 90-epoch protocol (the
    ImageNet family's; ``if nepochs == 90: self.lamb = 10.``), 5 otherwise."""
    return 10.0 if approach == "lucir_2stage" and augment_family == "imagenet" else 5.0


@dataclass(frozen=True)
class GVAlignOptions:
    # Stage 1. ``mixup_data(images, targets)`` with its default ``alpha=1.0``: lam ~ Beta(1, 1).
    mixup_alpha: float = at_least(0, 1.0, hint="0: no mixing")
    # ``loss = loss_criterion; loss += loss_mix``: the mixup term unweighted; 0 turns stage 1's
    # mixup off (the model then sees the original batch only).
    mixup_weight: float = at_least(0, 1.0)
    # Stage 2. ``for e in range(100): ... classifier_tune(...)``: one SGD step per "epoch".
    align_steps: int = at_least(0, 100, hint="0: no alignment")
    # ``samples = distrib.rsample()``: one pseudo-feature per class and step.
    align_samples_per_class: int = at_least(1, 1)
    # ``lr = 0.1`` then ``torch.optim.SGD(heads.parameters(), lr=lr, weight_decay=self.wd,
    # momentum=self.momentum)``: a fixed 0.1, the run's weight decay and momentum.
    align_lr: float = positive(0.1)
    # Steps after which the alignment lr is multiplied by the run's lr_gamma (the code reuses
    # the main phase's ``schedule_step``: none within 100 steps for CIFAR-100, 30 and 60 for
    # ImageNet-Subset).
    align_milestones: tuple[int, ...] = at_least(1, ())
    # ``protosave(self.model, trn_loader, ...)``: the prototypes and the covariance come from the
    # training loader, i.e. from augmented views; false: from the un-augmented images.
    prototype_augment: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "align_milestones", tuple(int(m) for m in self.align_milestones))
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()


@dataclass(frozen=True)
class TwoStageOptions:
    # LT-CIL code: ``self.stage2epoch = 30`` (EEIL-2stage: 1, see EEILTwoStageOptions).
    stage2_epochs: int = at_least(0, 30)
    # LT-CIL code, ``adjust_learning_rate_stage_2``: after the first epoch the LWS parameters'
    # group runs at ``(1 / lr_factor) * lr`` of the classifier's, lr_factor 10.
    stage2_lr_factor: float = positive(0.1)
    # False: the scales learn alone on a frozen classifier (the paper's description of LWS).
    stage2_train_head: bool = True
    # "class_aware": LT-CIL's ``ClassAwareSampler(num_samples_cls=4)``; "iid": independent
    # class-balanced draws.
    stage2_sampler: str = one_of("class_aware", "iid")
    # "ce" (what the public code computes) or "las" (label-aware smoothing, imported there but
    # unused).
    stage2_loss: str = one_of("ce", "las")
    # For "las": MiSLAS's CIFAR-100-LT (rho = 100) stage-2 config: ``smooth_head: 0.4``,
    # ``smooth_tail: 0.1``, concave shape (MiSLAS's default).
    smooth_head: float = ranged(0.4, low=0, high=1, high_open=True)
    smooth_tail: float = ranged(0.1, low=0, high=1, high_open=True)
    smooth_shape: str = one_of("concave", "linear", "convex")


@dataclass(frozen=True)
class EEILTwoStageOptions(TwoStageOptions):
    # ``eeil_2stage.py``: ``# for e in range(self.stage2epoch):`` then ``for e in range(1):``.
    stage2_epochs: int = at_least(0, 1)


@dataclass(frozen=True)
class LUCIRTwoStageOptions(TwoStageOptions):
    # ``lucir_2stage.py``'s ``train_loop``: stage 1 runs only if the new data hold more than 10
    # images per new class on average; 0: always.
    stage1_min_per_class: float = at_least(0, 10.0)


def variant_options(base: type, extra: type, class_name: str) -> type:
    """A wrapper approach's options: ``extra``'s fields plus its base approach's."""
    cls = dataclasses.make_dataclass(f"{class_name}Options", [], bases=(extra, base), frozen=True)
    cls.__module__ = __name__
    return cls


_BASES: dict[str, type] = {
    "bic": BiCOptions,
    "dgr": DGROptions,
    "eeil": EEILOptions,
    "finetune": NoOptions,
    "icarl": ICaRLOptions,
    "joint": JointOptions,
    "lucir": LUCIROptions,
    "lwf": LwFOptions,
    "podnet": PODNetOptions,
}
# name -> (base approach, extra options, class-name suffix): the wrapper approaches of
# ``methods/two_stage.py`` and ``methods/gvalign.py``.
VARIANTS: dict[str, tuple[str, type, str]] = {
    "eeil_2stage": ("eeil", EEILTwoStageOptions, "TwoStage"),
    "lucir_2stage": ("lucir", LUCIRTwoStageOptions, "TwoStage"),
    "podnet_2stage": ("podnet", TwoStageOptions, "TwoStage"),
    "lucir_gvalign": ("lucir", GVAlignOptions, "GVAlign"),
    "podnet_gvalign": ("podnet", GVAlignOptions, "GVAlign"),
}
_CLASS_NAMES = {"eeil": "EEIL", "lucir": "LUCIR", "podnet": "PODNet"}

APPROACH_OPTIONS: dict[str, type] = {
    **_BASES,
    **{
        name: variant_options(_BASES[base], extra, _CLASS_NAMES[base] + suffix)
        for name, (base, extra, suffix) in VARIANTS.items()
    },
}


def approach_names() -> list[str]:
    return sorted(APPROACH_OPTIONS)


def canonical_approach(name: str) -> str:
    """Approach names are case-insensitive (the paper's script says ``DGR``)."""
    for known in APPROACH_OPTIONS:
        if known.lower() == str(name).lower():
            return known
    raise ConfigError(f"unknown approach {name!r}; choose one of: {', '.join(approach_names())}")


def options_class(approach: str) -> type:
    return APPROACH_OPTIONS[canonical_approach(approach)]
