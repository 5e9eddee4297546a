"""Expansion: stable content-hash ids, precedence, include/exclude, the paper grid's dry-run."""

from __future__ import annotations

import re

from conftest import REPO

from orchestrator.cli import main
from cil_core.config import fingerprint
from orchestrator.sweep import load_sweep, load_sweep_text
from orchestrator.trials import axis_counts, expand, resolve, trial_id

BASE = """
name: t
defaults: {epochs: 1, lr: 0.1, device: cpu, dgr.kd_base: 0.5}
grid:
  dataset: [synthetic, digits]
  scenario: [lt, ltio]
  split: [[5, 2], [8, 2]]
  approach: [dgr, finetune, {name: dgr-noDAKD, approach: dgr, set: {dgr.dakd: false}}]
  seed: [0, 1]
"""


def test_ids_are_the_resolved_configs_fingerprint():
    """The id ends with cil_core's fingerprint of the resolved config (what result.json records)."""
    config = {"dataset": "synthetic", "approach": "dgr", "scenario": "lt", "initial_classes": 5, "total_tasks": 2, "seed": 0, "lr": 0.1}
    resolved = resolve(config)
    tid = trial_id(resolved)
    assert re.fullmatch(r"dgr_synthetic_lt_5-2_s0_[0-9a-f]{16}", tid)
    assert tid.endswith(fingerprint(resolved))
    # key order, option spelling, integral floats, strings, non-semantic keys and restated defaults do not matter
    same = {"lr": "0.1", "seed": 0, "total_tasks": 2.0, "initial_classes": 5, "scenario": "lt", "approach": "DGR", "dataset": "synthetic"}
    assert trial_id(resolve({**same, "out": "/x", "device": "cuda", "num_workers": 4})) == tid  # (synthetic takes no data_root)
    defaults = {"epochs": 2, "batch_size": 64, "lr_milestones": [], "weight_decay": 5e-4, "dgr.kd_base": 0.7, "dgr.dakd": True, "backbone": "convnet"}
    assert trial_id(resolve({**config, **defaults})) == tid
    assert trial_id(resolve({**config, "dgr.dakd": False})) == trial_id(resolve({**config, "options": {"dgr": {"dakd": False}}}))
    assert trial_id(resolve({**config, "lwf.lamb": 3})) == tid  # another approach's option does nothing
    # anything that changes the computation changes the id
    for change in ({"lr": 0.05}, {"seed": 1}, {"dgr.dakd": False}, {"epochs": 3}, {"batch_size": 32}, {"lt_seed": 1}, {"rho": 50}):
        assert trial_id(resolve({**config, **change})) != tid, change


def test_restating_a_default_changes_no_id_of_quickstart(capsys):
    """``--set KEY=<its resolved default>``: 0 new ids of quickstart's 144; a real change: 144 of 144."""
    sweep = load_sweep(REPO / "sweeps" / "quickstart.yaml")
    plain = {t.id for t in expand(sweep)}
    assert len(plain) == 144
    for restated in ({"lr": "0.1"}, {"epochs": "20"}, {"lr_milestones": "15"}, {"batch_size": "32"}, {"lucir.lamb_base": "5"}):
        assert {t.id for t in expand(sweep, set_values=restated)} == plain, restated
    assert not {t.id for t in expand(sweep, set_values={"lr": "0.05"})} & plain
    lucir = {t.id for t in expand(sweep, set_values={"lucir.lamb_base": "10"})} - plain
    assert len(lucir) == 12 and all(i.startswith("lucir_digits") for i in lucir)  # only plain LUCIR reads lucir.*


def test_data_set_dependent_option_defaults_are_resolved_into_the_config():
    """LUCIR's lamb_base as the reference code sets it (written out, not None): 5 for plain
    LUCIR everywhere, 10 for LUCIR-2stage on ImageNet-like data only."""
    base = {"approach": "lucir", "scenario": "lt", "initial_classes": 50, "total_tasks": 6}
    assert resolve({**base, "dataset": "cifar100"}).options["lucir"]["lamb_base"] == 5.0
    assert resolve({**base, "dataset": "imagenet_subset"}).options["lucir"]["lamb_base"] == 5.0
    two_stage = {**base, "approach": "lucir_2stage"}
    assert resolve({**two_stage, "dataset": "cifar100"}).options["lucir_2stage"]["lamb_base"] == 5.0
    assert resolve({**two_stage, "dataset": "imagenet_subset"}).options["lucir_2stage"]["lamb_base"] == 10.0
    assert resolve({**base, "dataset": "imagenet_subset", "lucir.lamb_base": 3}).options["lucir"]["lamb_base"] == 3.0


def test_expansion_is_stable_and_ordered():
    sweep = load_sweep_text(BASE, "x.yaml")
    a, b = expand(sweep), expand(load_sweep_text(BASE, "y.yaml"))
    assert [t.id for t in a] == [t.id for t in b]
    assert len(a) == 2 * 2 * 2 * 3 * 2
    assert len({t.id for t in a}) == len(a)
    assert [t.variant for t in a[:6:2]] == ["dgr", "finetune", "dgr-noDAKD"]
    first = a[0]
    assert first.config["options"]["dgr"]["kd_base"] == 0.5 and first.config["options"]["dgr"]["dakd"] is True
    variant = next(t for t in a if t.variant == "dgr-noDAKD")
    assert variant.config["options"]["dgr"] == {**first.config["options"]["dgr"], "dakd": False}
    finetune = next(t for t in a if t.variant == "finetune")
    assert finetune.config["options"] == {"finetune": {}}  # dgr's option is dropped for finetune


def test_precedence_and_resources_and_hours():
    text = BASE + """
datasets:
  digits: {set: {lr: 0.2, epochs: 2}, resources: {gpu: 0.5}, hours: 1.0}
approaches:
  dgr: {set: {lr: 0.3}, resources: {cpu: 2}, hours_factor: 2}
overrides:
  - match: {dataset: digits, approach: finetune, seed: 1}
    set: {lr: 0.4}
resources: {gpu: 0, cpu: 1}
"""
    trials = expand(load_sweep_text(text, "x.yaml"), set_values={"epochs": 5})
    pick = {(t.dataset, t.variant, t.seed, t.scenario, t.split): t for t in trials}
    t = pick[("digits", "dgr", 0, "lt", (5, 2))]
    assert t.config["lr"] == 0.3 and t.config["epochs"] == 5  # approach > data set; --set > all
    assert t.resources == {"gpu": 0.5, "cpu": 2.0} and t.hours == 2.0
    assert pick[("digits", "finetune", 1, "lt", (5, 2))].config["lr"] == 0.4
    assert pick[("digits", "finetune", 0, "lt", (5, 2))].config["lr"] == 0.2
    s = pick[("synthetic", "finetune", 0, "lt", (5, 2))]
    assert s.config["lr"] == 0.1 and s.resources == {"gpu": 0.0, "cpu": 1.0} and s.hours is None


def test_exclude_and_include():
    text = BASE + """
exclude:
  - {dataset: digits, split: [8, 2]}
  - {approach: dgr-noDAKD, scenario: ltio}
include:
  - {dataset: digits, scenario: lt, split: [[4, 4]], approach: [finetune]}
"""
    trials = expand(load_sweep_text(text, "x.yaml"))
    keys = {(t.dataset, t.scenario, t.split, t.variant) for t in trials}
    assert ("digits", "lt", (8, 2), "dgr") not in keys
    assert ("synthetic", "ltio", (5, 2), "dgr-noDAKD") not in keys
    assert ("synthetic", "lt", (5, 2), "dgr-noDAKD") in keys
    assert ("digits", "lt", (4, 4), "finetune") in keys and ("digits", "lt", (4, 4), "dgr") not in keys
    assert sum(1 for t in trials if t.split == (4, 4)) == 2  # both seeds


def test_paper_table_dry_run_lists_every_trial_with_counts_per_axis(capsys):
    """The paper's grid: 4 data sets, conv/lt/ltio, LFS and LFH splits, 12 approaches (DGR and its
    11 baselines) everywhere, GVAlign on LUCIR and PODNet on CIFAR-100 lt/ltio only, 3 seeds (validated against cil_core's registry
    in a child process)."""
    path = REPO / "sweeps" / "paper_table.yaml"
    code = main([str(path), "--dry-run", "--results", "/nonexistent/results"])
    out = capsys.readouterr().out
    assert code == 0
    trials = expand(load_sweep(path))
    counts = axis_counts(trials)
    assert counts["dataset"] == {"cifar100": 600, "imagenet_subset": 540, "Food101": 360, "imagenet_1000": 216}
    assert counts["scenario"] == {"conv": 432, "lt": 642, "ltio": 642}
    assert counts["seed"] == {0: 572, 1: 572, 2: 572}
    assert len(counts["approach"]) == 14
    assert counts["approach"]["lucir_gvalign"] == counts["approach"]["podnet_gvalign"] == 30  # 2 scenarios x 5 splits x 3 seeds
    assert set(counts["approach"].values()) == {138, 30}
    assert all(t.dataset == "cifar100" and t.scenario != "conv" for t in trials if t.approach.endswith("_gvalign"))
    assert {"5 20", "10 10", "20 5", "50 6", "50 11", "51 6", "51 11"} <= set(counts["split"])
    assert not any(t.dataset == "Food101" and (t.scenario == "conv" or t.split[0] == 50) for t in trials)
    assert f"sweep paper_table: {len(trials)} trials" in out
    assert "  dataset   cifar100 600, imagenet_subset 540, Food101 360, imagenet_1000 216  (4 values)" in out
    assert "  seed      0 572, 1 572, 2 572  (3 values)" in out
    assert re.search(r"estimated cost: [\d.]+ GPU hours", out)
    for t in trials[:3] + trials[-3:]:
        assert t.id in out
    assert len([line for line in out.splitlines() if "to run" in line]) == len(trials)


def test_other_sweep_files_expand(capsys, tmp_path):
    counts = {
        "quickstart": 144,
        "tinyimagenet_lt": 144,
        "tinyimagenet_dgr_vs_finetune": 24,
        "tinyimagenet_ltio_long": 6,
        "tinyimagenet_dgr_ablation": 28,
        "search_dgr": 1,
        "paper_table": 1716,
    }
    shipped = {path.stem for path in (REPO / "sweeps").glob("*.yaml")}
    assert shipped == set(counts), "every shipped sweep file must be expanded by this test"
    expanded = {}
    for name, count in counts.items():
        sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        trials = expand(sweep, set_values={"data_root": str(tmp_path)} if sweep.requires else None)
        assert len(trials) == count, name
        expanded[name] = trials
    ablation = {t.variant: t for t in expanded["tinyimagenet_dgr_ablation"] if t.scenario == "ltio"}
    dgr = ablation["dgr"].config["options"]["dgr"]
    assert ablation["dgr-noDAKD"].config["options"]["dgr"] == {**dgr, "dakd": False}
    assert ablation["dgr-kd0.07"].config["options"]["dgr"] == {**dgr, "kd_base": 0.07}
    assert len({t.id for t in expanded["tinyimagenet_dgr_ablation"]}) == 28
    assert {t.resources["gpu"] for t in expanded["quickstart"]} == {0.0}
    search = load_sweep(REPO / "sweeps" / "search_dgr.yaml").search
    assert search is not None and set(search.space) == {"dgr.kd_base", "lr"} and search.searcher == "optuna"
    code = main([str(REPO / "sweeps" / "search_dgr.yaml"), "--dry-run", "--results", str(tmp_path / "r")])
    assert code == 0 and "x 24 samples (optuna search over dgr.kd_base, lr)" in capsys.readouterr().out


def test_trials_without_hours_are_costed_by_the_cost_model():
    """The sweep file's ``hours`` wins; without it the dry run's estimate is cil_core's cost model
    of the trial's resolved config (CPU figures measured; a pending GPU figure counts as unknown)."""
    from cil_core.config import config_from_dict
    from cil_core.cost_model import trial_hours
    from orchestrator.trials import TrialSpec, estimate_hours

    config = resolve({"dataset": "tinyimagenet100_lt", "approach": "dgr", "scenario": "lt", "initial_classes": 20,
                      "total_tasks": 5}).to_dict()
    expected = trial_hours(config_from_dict(config), "cpu")
    assert expected is not None and expected > 0
    on_cpu = TrialSpec(id="a", variant="dgr", config=config, resources={"gpu": 0, "cpu": 2})
    assert estimate_hours([on_cpu]) == {"gpu_hours": 0.0, "cpu_hours": 2 * expected, "trial_hours": expected, "unknown": 0}
    given = TrialSpec(id="b", variant="dgr", config=config, resources={"gpu": 0, "cpu": 1}, hours=3.0)
    assert estimate_hours([given])["cpu_hours"] == 3.0
    on_gpu = TrialSpec(id="c", variant="dgr", config=config, resources={"gpu": 1, "cpu": 1})
    assert estimate_hours([on_gpu])["unknown"] == (trial_hours(config_from_dict(config), "gpu") is None)
