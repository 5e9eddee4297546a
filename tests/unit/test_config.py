"""Config building: precedence, coercion, and one-line errors that name the key."""

from __future__ import annotations

import pytest

from cil_core.config import build_config, parse_set_items, resolve_config
from cil_core.errors import ConfigError

BASE = {"dataset": "synthetic", "approach": "dgr", "scenario": "lt", "initial_classes": 10, "total_tasks": 2}


def test_protocol_defaults_fill_unset_values():
    cfg = resolve_config(build_config({**BASE, "dataset": "cifar100", "initial_classes": 50, "total_tasks": 6}))
    assert (cfg.backbone, cfg.epochs, cfg.lr_milestones, cfg.weight_decay) == ("resnet32", 160, (80, 120), 5e-4)
    assert cfg.lr == 0.1 and cfg.batch_size == 128
    assert cfg.options["dgr"]["dakd"] is True  # approach defaults written out in full


def test_user_values_override_protocol_and_schedule_scales_with_epochs():
    cfg = resolve_config(build_config({**BASE, "dataset": "cifar100", "initial_classes": 50, "total_tasks": 6, "epochs": "16"}))
    assert cfg.epochs == 16 and cfg.lr_milestones == (8, 12)


def test_set_items_coerce_types_and_approach_options():
    values = {**BASE, **parse_set_items(["dgr.dakd=false", "lr=0.05", "lr_milestones=3,5", "dgr.kd_base=0.5"])}
    cfg = build_config(values)
    assert cfg.options["dgr"] == {"dakd": False, "kd_base": 0.5}
    assert cfg.lr == 0.05 and cfg.lr_milestones == (3, 5)


def test_approach_names_are_case_insensitive():
    assert build_config({**BASE, "approach": "DGR"}).approach == "dgr"


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({**BASE, "lrr": 1}, "unknown option 'lrr'"),
        ({**BASE, "dgr.dakdd": "false"}, "unknown option dgr.dakdd"),
        ({**BASE, "dgr.dakd": "maybe"}, "dgr.dakd: expected true or false"),
        ({**BASE, "epochs": "ten"}, "epochs: expected an integer"),
        ({**BASE, "approach": "nope"}, "unknown approach 'nope'"),
        ({**BASE, "dataset": "nope"}, "unknown dataset 'nope'"),
        ({**BASE, "scenario": "weird"}, "unknown scenario 'weird'"),
    ],
)
def test_bad_values_name_the_key(values, fragment):
    with pytest.raises(ConfigError) as err:
        build_config(values)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({**BASE, "initial_classes": 20}, "leaves no classes"),
        ({**BASE, "initial_classes": 15, "total_tasks": 8}, "8 tasks need at least 7 classes"),
    ],
)
def test_impossible_splits_are_refused(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve_config(build_config(values))


def test_set_item_without_equals():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_set_items(["dgr.dakd"])


def test_fingerprints_by_seed_equal_the_fingerprint_of_each_seeds_config():
    import dataclasses

    from cil_core.config import fingerprint, fingerprints_by_seed

    cfg = resolve_config(build_config({**BASE, "dataset": "digits", "initial_classes": 4, "total_tasks": 4, "lr": "0.05"}))
    of = fingerprints_by_seed(cfg)
    for seed in (0, 1, 7, 123456):
        assert of(seed) == fingerprint(dataclasses.replace(cfg, seed=seed))
    assert len({of(s) for s in range(100)}) == 100


def test_config_resolution_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys; from cil_core.config import build_config, resolve_config, fingerprint; "
        "c = resolve_config(build_config(dict(dataset='cifar100', approach='lucir_2stage', scenario='lt', initial_classes=50, total_tasks=6))); "
        "print(fingerprint(c), c.options['lucir_2stage']['lamb_base'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1:] == ["5.0", "False"]


def test_augmentation_comes_from_the_protocol_unless_given():
    # The CPU stand-in's protocol names its own augmentation; the paper's sets keep the
    # reference code's pad + random-resized crop; a user's choice wins over either.
    tiny = {**BASE, "dataset": "tinyimagenet100_lt", "initial_classes": 20, "total_tasks": 5}
    assert resolve_config(build_config(tiny)).augment == "crop_flip"
    assert resolve_config(build_config({**tiny, "augment": "reference"})).augment == "reference"
    cifar = {**BASE, "dataset": "cifar100", "initial_classes": 50, "total_tasks": 6}
    assert resolve_config(build_config(cifar)).augment == "reference"
